#!/usr/bin/env bash
# Instructions per operation, from callgrind (no PMU needed, no noise):
# runs procreg-bench once per target under callgrind, collecting only
# inside the workload's loop function, and divides the instructions by
# the operations.  The loop's own bookkeeping (key choice, prefetch,
# sampling) is in every target's figure alike.
#
#   bench/callgrind-ops.sh [-B builddir] [-k keys] [-n ops] [-t threads]
#                          [-o keepdir] WORKLOAD TARGET...
#   bench/callgrind-ops.sh -k 100k lookup-hit raw-ckht ckht ghash
#
# Prints "workload target keys instructions/op" per target.  With -o, the
# profiles stay in keepdir as TARGET.cg, for callgrind_annotate (e.g.
# --inclusive=yes --tree=caller) to say where the instructions go.
set -euo pipefail
build=build keys=100k ops=200000 threads=1 keep=
while getopts B:k:n:t:o: opt; do
    case $opt in
    B) build=$OPTARG ;;
    k) keys=$OPTARG ;;
    n) ops=$OPTARG ;;
    t) threads=$OPTARG ;;
    o) keep=$OPTARG ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
workload=$1; shift
loop=loop_${workload//-/_}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { # target
    valgrind --tool=callgrind --callgrind-out-file="$out/$1.cg" \
        --toggle-collect="$loop" -q \
        "$build/bench/procreg-bench" --no-baselines --backend "$1" \
        --workloads "$workload" --keys "$keys" --threads "$threads" \
        --ops "$ops" --reps 1 --warmup 0 --dist uniform \
        --sample-every 1048576 --no-tsc -q \
        >"$out/$1.log" 2>&1 || { cat "$out/$1.log" >&2; return 1; }
}
# Two at a time: each run is single-threaded under valgrind.
pids=()
for target in "$@"; do
    run "$target" & pids+=($!)
    [ ${#pids[@]} -lt 2 ] || { wait "${pids[0]}"; pids=("${pids[@]:1}"); }
done
for p in "${pids[@]}"; do wait "$p"; done
for target in "$@"; do
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$out/$target.cg")
    printf '%s %s %s %.1f\n' "$workload" "$target" "$keys" \
        "$(echo "$ir / ($ops * $threads)" | bc -l)"
    [ -z "$keep" ] || { mkdir -p "$keep" && cp "$out/$target.cg" "$keep/"; }
done
