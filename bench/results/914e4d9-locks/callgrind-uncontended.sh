#!/bin/sh
# Instructions per uncontended procreg_lock()+procreg_unlock(): callgrind
# totals of two runs of lock-bench --uncontended, differing in rounds.
set -e
B=${LOCK_BENCH:-build/tests/coord/lock-bench}
D=$(mktemp -d)
for spec in ghash ckht optimized:inner=ghash "lmdb:path=@TMPDIR@/cg.mdb,durability=nosync"; do
  for n in 200 1200; do
    G_SLICE=always-malloc valgrind --tool=callgrind --callgrind-out-file=$D/out.$n "$B" --uncontended --rounds=$n "$spec" >/dev/null 2>$D/err.$n
    eval "i$n=\$(grep '^summary:' $D/out.$n | awk '{print \$2}')"
  done
  echo "$spec: $(( (i1200 - i200) / 1000 )) instructions per lock+unlock (runs of 200 and 1200 rounds: $i200, $i1200)"
done
rm -r "$D"
