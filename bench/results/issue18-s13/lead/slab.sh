#!/bin/sh
# ckht with its entries in the slab (after) against malloc'd entries (before, 5f4486a),
# alternated, nothing else running; load printed before each.  Columns: workload threads
# target, median ops/s of the 5 reps, max ops/s].  BEFORE and AFTER are the two builds'
# procreg-bench (run in /work/main, session 13, 2026-12-07).
BEFORE=${BEFORE:-/work/wt/liveness-split/build/bench/procreg-bench}
AFTER=${AFTER:-build-dev/bench/procreg-bench}
for round in 1 2 3 4; do
    for which in before after; do
        if [ $which = before ]; then bin=$BEFORE; else bin=$AFTER; fi
        echo "== round $round $which load $(cut -d' ' -f1 /proc/loadavg)"
        $bin --no-baselines --backends raw-ckht,ckht --workloads lookup-hit,mixed,churn \
            --keys 100k --threads 1,2 --reps 5 --seconds 0.3 --pin 2>&1 |
            awk '/^== /{w=$2} /^  100000/{print w, $3, $4, $5, $8}'
    done
done
