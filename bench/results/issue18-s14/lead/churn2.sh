#!/bin/sh
# Two-thread churn across the session's builds, alternated: main at the start (aa9810d), the
# churn-cut branch alone (8a2c494), the ghash-mem branch alone (dc13855), main after both merges.
# Columns: workload threads target median-ops/s max-ops/s (5 reps of 0.3 s, pinned).
for round in 1 2 3; do
    for b in /work/wt/churn-base/build /work/wt/churn-cut/build /work/wt/ghash-mem/build build-dev; do
        echo "== round $round $b load $(cut -d' ' -f1 /proc/loadavg)"
        $b/bench/procreg-bench --no-baselines --backends raw-ckht,ckht,ghash --workloads churn \
            --keys 100k --threads 1,2 --reps 5 --seconds 0.3 --pin 2>&1 |
            awk '/^== /{w=$2} /^  100000/{print w, $3, $4, $5, $8}'
    done
done
