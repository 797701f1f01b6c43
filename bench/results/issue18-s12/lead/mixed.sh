#!/bin/sh
# Four rounds of the 2-thread mixed row (90/5/5 lookup/register/unregister,
# 100 000 keys, pinned), nothing else running; load printed before each.
for round in 1 2 3 4; do
    echo "== round $round load $(cut -d' ' -f1-3 /proc/loadavg)"
    build-dev/bench/procreg-bench --backends ckht,ghash,optimized:inner=ckht \
        --workloads mixed --keys 100k --threads 1,2 --reps 5 --seconds 0.3 --pin
done
