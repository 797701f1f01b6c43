#!/usr/bin/env bash
# Instructions per op of every workload procreg-bench lists, ghash and
# ckht, 10 000 keys (and 100 000 for lookup-hit and churn), with main's
# library (a copy of build/core made before any change, in $MAIN) and
# this branch's (build/core), the same procreg-bench binary.
#   MAIN=/tmp/ghash-mem-main/core bench/results/issue18-s14/ghash-mem/callgrind.sh
# load has no loop function for callgrind-ops.sh: its figure is the
# instructions inside procreg_register_key() (inclusive) over the keys.
# The scans run fewer ops (list-ns, count-ns 20 000; find-ns 2 000; find 100),
# the rest callgrind-ops.sh's 200 000.  WORKLOADS=... picks some.
set -u
main=${MAIN:?}
wls=${WORKLOADS:-"load lookup-hit lookup-hit-key lookup-entry lookup-miss lookup-telemetry list-ns count-ns find find-ns update mixed churn wait watch group-churn dispatch group-members"}
run() { # keys workload
    ops=200000
    case $2 in list-ns|count-ns) ops=20000 ;; find-ns) ops=2000 ;; find) ops=100 ;; esac
    for lib in "$main" build/core; do
        echo "# lib $lib"
        LD_LIBRARY_PATH=$lib nice -n 10 bench/callgrind-ops.sh -B build -k "$1" -n $ops "$2" ghash ckht 2>&1 | tail -3
    done
}
load() { # keys(count) target
    out=$(mktemp -d)
    for lib in "$main" build/core; do
        echo "# lib $lib"
        LD_LIBRARY_PATH=$lib nice -n 10 valgrind --tool=callgrind -q \
            --callgrind-out-file="$out/cg" --toggle-collect=procreg_register_key \
            build/bench/procreg-bench --no-baselines --backend "$2" --workloads load \
            --keys "$1" --threads 1 --reps 1 --warmup 0 --sample-every 1048576 --no-tsc -q \
            >/dev/null 2>&1
        ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$out/cg")
        printf 'load %s %s %.1f\n' "$2" "$1" "$(echo "$ir / $1" | bc -l)"
    done
    rm -rf "$out"
}
for w in $wls; do
    case $w in
    load) load 10000 ghash; load 10000 ckht ;;
    *) run 10k "$w" ;;
    esac
done
[ -n "${WORKLOADS:-}" ] || for w in lookup-hit churn; do run 100k "$w"; done
