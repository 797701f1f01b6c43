#!/bin/bash
# How bench/results/ffd2f8c-inline was made: before = main at 0c116d3
# (git archive into /tmp/di-base, default meson build), after = this branch
# at ffd2f8c (build/), run one after the other in one run; load in load.txt.
# before (base) and after (new), one run
out=$1; mkdir -p $out
B=/tmp/di-base/build; N=/work/wt/dispatch-inline/build
{ echo "start"; uptime; } >> $out/load.txt
for r in 1 2 3 4 5; do
 for tag in base new; do b=$B; [ $tag = new ] && b=$N
  echo "[$tag] $($b/bench/group-probe dispatch ckht 1000000 20)"
  echo "[$tag] $($b/bench/group-probe dispatch ckht 10000 2000)"
 done
done > $out/probe-dispatch.txt 2>&1
uptime >> $out/load.txt
for tag in base new; do b=$B; [ $tag = new ] && b=$N
  echo "[$tag] $($b/bench/group-probe churn ckht 10 3000000)"
  echo "[$tag] $($b/bench/group-probe churn ckht 1000000 3000000)"
  echo "[$tag] $($b/bench/group-probe churn ghash 1000000 3000000)"
done > $out/probe-churn.txt 2>&1
uptime >> $out/load.txt
for tag in base new; do b=$B; [ $tag = new ] && b=$N
  for spec in ghash ckht optimized:inner=ckht; do echo "[$tag] $($b/bench/group-probe memory $spec 1000000)"; done
done > $out/probe-memory.txt 2>&1
uptime >> $out/load.txt
for tag in base new; do b=$B; [ $tag = new ] && b=$N
  echo "== $tag"
  $b/bench/procreg-bench --workloads group-churn,dispatch --keys 10,10000,1000000 --threads 1 --backends ghash,ckht --no-baselines --seconds 1 --reps 5 --warmup 0.2 -q
done > $out/churn-dispatch.txt 2>&1
uptime >> $out/load.txt
for tag in base new; do b=$B; [ $tag = new ] && b=$N
  echo "== $tag"
  $b/bench/procreg-bench --profile quick --workloads group-churn,dispatch,group-members --no-baselines -q
done > $out/quick.txt 2>&1
{ echo end; uptime; } >> $out/load.txt
for tag in base new; do b=$B; [ $tag = new ] && b=$N
  for sz in 10000 1000000; do echo "[$tag] dispatch $sz: $(valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect=dispatch_loop $b/bench/group-probe dispatch ckht $sz $((10000000/sz)) 2>&1 | grep -E 'Collected')"; done
  for sz in 10 1000000; do echo "[$tag] churn $sz: $(valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect=churn_loop $b/bench/group-probe churn ckht $sz 100000 2>&1 | grep -E 'Collected')"; done
done > $out/callgrind.txt 2>&1
{ echo end-callgrind; uptime; } >> $out/load.txt
