#!/bin/sh
# Runs one planted-bug history run N times beside a load and counts, per
# run, whether it found the expected violation and how many violations of
# that kind it reported (shown ones + "N more").  Usage, from the build dir's
# parent:  measure.sh BUILD WHICH N LOAD
#   WHICH: dead-holder | late-external-event
#   LOAD:  hogs (4 busy loops) | valgrind (4 busy loops + a valgrind run) | none
# The runs are the exact commands of `meson test -v`.
set -u
B=$1; WHICH=$2; N=$3; LOAD=$4
case $WHICH in
dead-holder)
    set -- "$B/tests/history/history-run-dead-holder" threads ghash \
        --seconds 2 --kills 12 --expect 'answered EEXISTS naming the dead holder'
    PAT='answered EEXISTS naming the dead holder'; MORE='more static violations' ;;
late-external-event)
    set -- "$B/tests/history/history-run-late-external-event" lmdb \
        --seconds 3 --clients 3 --expect 'events of a key out of order'
    PAT='events of a key out of order'; MORE='more event violations' ;;
esac
pids=
if [ "$LOAD" != none ]; then
    for i in 1 2 3 4; do nice -n 10 sh -c 'while :; do :; done' & pids="$pids $!"; done
fi
if [ "$LOAD" = valgrind ]; then
    nice -n 10 setsid sh -c "while :; do valgrind -q $B/tests/history/history-run-dead-holder threads ghash --seconds 20 >/dev/null 2>&1; done" &
    vg=$!
fi
found=0
out=$(mktemp)
i=1
while [ $i -le $N ]; do
    keep=$(mktemp -d)
    # dead-holder: --keep, for the per-kill count (perkill.py)
    [ $WHICH = dead-holder ] && k=--keep || k=
    TMPDIR=$keep MALLOC_PERTURB_=165 G_DEBUG=fatal-criticals G_SLICE=always-malloc \
        nice -n 15 timeout 170 "$@" $k > "$out" 2>&1
    rc=$?
    [ $WHICH = dead-holder ] && python3 "$(dirname "$0")/perkill.py" "$keep"/procreg-history-*
    rm -rf "$keep"
    shown=$(grep -v '^history: found\|^history: FAIL' "$out" | grep -c "$PAT")
    more=$(sed -n "s/^history: \([0-9]*\) $MORE/\1/p" "$out" | head -1)
    load=$(cut -d' ' -f1 /proc/loadavg)
    echo "run $i: rc $rc, shown $shown, more ${more:-0}, load $load"
    [ $rc -eq 0 ] && found=$((found + 1))
    [ $rc -ne 0 ] && cp "$out" "/tmp/planted-miss-$WHICH-$i.log"
    i=$((i + 1))
done
rm -f "$out"
if [ "$LOAD" = valgrind ]; then
    kill -- -$vg  # its own process group: the loop and its valgrind
fi
[ -n "$pids" ] && kill $pids
echo "$WHICH $LOAD: found $found of $N"
