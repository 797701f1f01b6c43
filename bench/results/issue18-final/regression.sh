#!/usr/bin/env bash
# Instructions per op of every single-thread workload, two libraries driven
# by one procreg-bench (the later one's), 10 000 keys (the optimized
# targets with a TTL of an hour: callgrind runs ~50x slower than the CPU,
# and a cached entry that expires mid-run would make the count depend on
# the machine's speed).
#   BASE_LIB=dir/with/libprocreg.so.0 HEAD_LIB=... bench/results/issue18-final/regression.sh
# Here BASE_LIB was 111a91e's build (meson setup build --werror -Dtests=false;
# ninja -C build core/libprocreg.so.0.1.0) and HEAD_LIB 1063f31's.
set -u
for w in lookup-hit lookup-hit-key lookup-entry lookup-miss update churn mixed list-ns count-ns find-ns find; do
  n=50000
  case $w in list-ns|count-ns|find-ns) n=500 ;; find) n=50 ;; esac
  for lib in base head; do
    if [ $lib = base ]; then export LD_LIBRARY_PATH=$BASE_LIB; else export LD_LIBRARY_PATH=$HEAD_LIB; fi
    bench/callgrind-ops.sh -k 10k -n $n $w ckht ghash \
      'optimized:inner=ckht,ttl_ms=3600000' 'optimized:inner=ghash,ttl_ms=3600000' |
      sed "s/^/$lib /"
  done
done
