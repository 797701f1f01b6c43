#!/usr/bin/env bash
# Wall-clock and memory figures: this branch's library (after) and main's (before), same bench binary, interleaved.
# MAIN_BUILD: a build directory of main (the library is enough).
cd "$(dirname "$0")/../../.."
B=build/bench/procreg-bench
run() { # label, args...
  local label=$1; shift
  for lib in after before; do
    if [ $lib = before ]; then export LD_LIBRARY_PATH="$MAIN_BUILD"/core; else unset LD_LIBRARY_PATH; fi
    echo "===== $label $lib: $(uptime)"
    $B -q "$@" 2>&1
  done
}
run writers --backends ckht,ghash --workloads mixed,churn --keys 100k --threads 1,2 --reps 5 --seconds 0.3 --pin
run big --backends ckht,ghash,optimized:inner=ghash,optimized:inner=ckht --workloads load,lookup-hit,list-ns,count-ns,find-ns --keys 1M --threads 1 --reps 3 --seconds 0.3
run big2 --backends ckht,ghash,optimized:inner=ghash,optimized:inner=ckht --workloads lookup-hit --keys 1M --threads 2 --reps 3 --seconds 0.3 --pin
echo "===== end: $(uptime)"
