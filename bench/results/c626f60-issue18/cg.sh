#!/usr/bin/env bash
# Instruction counts, 100k keys, after (this branch) and before (main's library under the same bench binary).
# MAIN_BUILD: a build directory of main (the library is enough).
cd "$(dirname "$0")/../../.."
git rev-parse --short HEAD; git rev-parse --short main; uptime
for lib in after before; do
  if [ $lib = before ]; then export LD_LIBRARY_PATH="$MAIN_BUILD"/core; else unset LD_LIBRARY_PATH; fi
  echo "== $lib"
  bench/callgrind-ops.sh -k 100k lookup-hit raw-ckht ckht ghash
  bench/callgrind-ops.sh -k 100k lookup-hit-key raw-ckht ckht
  bench/callgrind-ops.sh -k 100k churn raw-ckht ckht ghash
done
uptime
