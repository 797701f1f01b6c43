#!/usr/bin/env bash
# One namespace's list, count and find among 1M entries (ghash), main's
# library ($MAIN) and this branch's: the cost follows the namespace (100
# entries), not the table.
#   MAIN=/tmp/ghash-mem-main/core bench/results/issue18-s14/ghash-mem/scans-1M.sh
set -u
for w in "list-ns 1000" "count-ns 1000" "find-ns 200"; do
    set -- $w
    for lib in "${MAIN:?}" build/core; do
        (r=$(LD_LIBRARY_PATH=$lib nice -n 10 bench/callgrind-ops.sh -B build -k 1M -n "$2" "$1" ghash 2>&1 | tail -1)
         echo "$r lib=$lib") &
    done
    wait
done
