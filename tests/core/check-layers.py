#!/usr/bin/env python3
"""Dependencies in libprocreg run one way (doc/architecture.md).

Reads the object files of the static library with nm and checks:
  - inside core/, a file calls only functions of files in lower layers
    (LAYERS below, bottom first);
  - a backend (backends/...) calls the core only through what the shared
    library exports (the API of procreg.h and backend.h), never the core's
    internal functions, and the core calls no backend except through the
    table of built-in backends.
Prints every call that breaks a rule; exits 1 if there is one.
"""
import argparse
import collections
import subprocess
import sys

LAYERS = [
    ["error", "brlock"],
    ["entry", "key", "owner", "spec", "builtin", "filter"],
    ["member"],
    ["backends", "filter-parse"],
    ["dispatch"],
    ["counters"],
    ["telemetry"],
    ["wake"],
    ["events"],
    ["owner-index"],
    ["liveness"],
    ["host", "wait", "namespaces"],
    ["registry"],
    ["writes"],
    ["health", "stats", "groups", "lock", "select", "nsmeta"],
    ["start"],
    ["gtypes"],
    ["gregistry"],
]


def member_name(header):
    """'.._backends_lmdb_ops.c.o:' -> 'backends/lmdb/ops'; 'key.c.o:' -> 'key'."""
    name = header.rstrip(":")
    for suffix in (".c.o", ".o"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.startswith("meson-generated_.._"):
        return name[len("meson-generated_.._"):]
    if name.startswith(".._backends_"):
        return "backends/" + name[len(".._backends_"):].replace("_", "/", 1)
    return name


def read_archive(nm, archive):
    defined, undefined = collections.defaultdict(set), collections.defaultdict(set)
    member = None
    out = subprocess.run([nm, archive], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        if line.endswith(":") and " " not in line:
            member = member_name(line)
            continue
        parts = line.split()
        if member is None or not parts:
            continue
        if len(parts) == 3 and parts[1] in "TDBR":
            defined[member].add(parts[2])
        elif len(parts) == 2 and parts[0] == "U":
            undefined[member].add(parts[1])
    return defined, undefined


def exported(nm, shared):
    out = subprocess.run([nm, "-D", "--defined-only", shared],
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nm", default="nm")
    ap.add_argument("static_lib")
    ap.add_argument("shared_lib")
    args = ap.parse_args()
    defined, undefined = read_archive(args.nm, args.static_lib)
    public = exported(args.nm, args.shared_lib)
    owner = {sym: m for m, syms in defined.items() for sym in syms}
    layer = {f: i for i, files in enumerate(LAYERS) for f in files}
    core = {m for m in defined if not m.startswith("backends/")}
    broken = []
    unplaced = sorted(core - set(layer))
    if unplaced:
        broken.append("core files in no layer (add them to LAYERS): "
                      + ", ".join(unplaced))
    for m in sorted(defined):
        for sym in sorted(undefined[m]):
            callee = owner.get(sym)
            if callee is None or callee == m:
                continue
            if m in core and callee in core:
                if m in layer and callee in layer and layer[callee] >= layer[m]:
                    broken.append(f"core/{m}.c (layer {layer[m]}) calls {sym} "
                                  f"of core/{callee}.c (layer {layer[callee]})")
            elif m.startswith("backends/") and callee in core:
                if sym not in public:
                    broken.append(f"{m}.c calls the core's internal {sym} "
                                  f"(core/{callee}.c)")
            elif m in core and callee.startswith("backends/"):
                if m != "builtin":
                    broken.append(f"core/{m}.c calls {sym} of {callee}.c")
    for b in broken:
        print(b)
    print(f"{len(core)} core files in {len(LAYERS)} layers, "
          f"{len(defined) - len(core)} backend files: "
          f"{len(broken)} broken rule(s)")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
