#!/usr/bin/env python3
"""Check the dynamic symbols a shared object defines.

  check-symbols.py [--nm NM] [--prefix P] [--require SYM]... \
                   [--allow-only SYM]... LIBRARY

Every defined dynamic symbol must start with the prefix (default
"procreg_"), or, with --allow-only, be one of the listed names.  Each
--require name must be present.  Linker-made symbols (_init, _fini,
_edata, _end, __bss_start) are ignored.  Exit 0 when all hold.
"""
import argparse
import subprocess
import sys

LINKER = {"_init", "_fini", "_edata", "_end", "__bss_start"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nm", default="nm")
    ap.add_argument("--prefix", default="procreg_")
    ap.add_argument("--require", action="append", default=[])
    ap.add_argument("--allow-only", action="append", default=[])
    ap.add_argument("library")
    args = ap.parse_args()

    out = subprocess.run([args.nm, "-D", "--defined-only", args.library],
                         check=True, capture_output=True, text=True).stdout
    symbols = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        kind, name = parts[1], parts[2]
        name = name.split("@")[0]
        if kind in ("A",) or name in LINKER:
            continue
        symbols.add(name)

    bad = []
    for s in sorted(symbols):
        if args.allow_only:
            if s not in args.allow_only:
                bad.append(s)
        elif not s.startswith(args.prefix):
            bad.append(s)
    missing = [s for s in args.require if s not in symbols]

    print(f"{args.library}: {len(symbols)} exported symbols")
    for s in bad:
        print(f"FAIL: exported symbol {s} is not allowed "
              f"({'not in --allow-only' if args.allow_only else 'lacks prefix ' + args.prefix})")
    for s in missing:
        print(f"FAIL: required symbol {s} is not exported")
    return 1 if bad or missing else 0


if __name__ == "__main__":
    sys.exit(main())
