#!/bin/sh
# Main at the session's start (aa9810d, BEFORE) against main after the churn-cut and ghash-mem
# merges (AFTER), alternated, nothing else running; load printed before each.  Columns:
# workload threads target median-ops/s max-ops/s (5 reps of 0.3 s, pinned).  Run in /work/main,
# session 14, 2026-12-07.
BEFORE=${BEFORE:-/work/wt/churn-base/build/bench/procreg-bench}
AFTER=${AFTER:-build-dev/bench/procreg-bench}
for round in 1 2; do
    for which in before after; do
        if [ $which = before ]; then bin=$BEFORE; else bin=$AFTER; fi
        echo "== round $round $which load $(cut -d' ' -f1 /proc/loadavg)"
        $bin --no-baselines --backends raw-ckht,ckht,ghash --workloads lookup-hit,mixed,churn \
            --keys 100k --threads 1,2 --reps 5 --seconds 0.3 --pin 2>&1 |
            awk '/^== /{w=$2} /^  100000/{print w, $3, $4, $5, $8}'
    done
done
