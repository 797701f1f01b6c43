#!/bin/sh
# Runs history-detects-stale-fill's program N times beside HOGS busy loops
# and says, per run, whether it found the planted violation and how many
# session violations its report counts.
#   at-load.sh BINARY N HOGS [extra history-run arguments...]
# (the test's own: --seconds 6 comes first, so a later --seconds wins)
set -u
bin=$1; n=$2; hogs=$3; shift 3
pids=""
i=0
while [ "$i" -lt "$hogs" ]; do
    nice -n 0 sh -c 'while :; do :; done' &
    pids="$pids $!"
    i=$((i + 1))
done
trap 'for p in $pids; do kill "$p"; done' EXIT INT TERM
found=0
i=0
while [ "$i" -lt "$n" ]; do
    t0=$(date +%s)
    out=$(PROCREG_TEST_STALE_FILL_STATS=1 G_DEBUG=fatal-criticals G_SLICE=always-malloc MALLOC_PERTURB_=165 "$bin" threads \
          'optimized:inner=[lmdb:path=@DIR@/registry.mdb],ttl_ms=60000' \
          --seconds 6 "$@" \
          --expect 'a client read an older revision after a newer one|is not consistent with the optimized promise' 2>&1)
    rc=$?
    secs=$(( $(date +%s) - t0 ))
    ops=$(printf '%s\n' "$out" | sed -n 's/.* threads ran \([0-9]*\) operations.*/\1/p' | head -1)
    # Violations: the reports shown (at most 5) plus "N more ...".
    shown=$(printf '%s\n' "$out" | grep -c '^history: a client\|^history: key .* not consistent')
    more=$(printf '%s\n' "$out" | sed -n 's/^history: \([0-9]*\) more session violations.*/\1/p' | head -1)
    stats=$(printf '%s\n' "$out" | grep "^stale-fill:" | tail -1)
    [ "$rc" -eq 1 ] && found=$((found + 1))
    echo "run $i: rc=$rc reports=$shown more=${more:-0} ops=$ops wall=${secs}s $stats"
    i=$((i + 1))
done
echo "found the violation in $found of $n runs ($hogs hogs)"
