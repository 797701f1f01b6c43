#!/usr/bin/env bash
# Run each libFuzzer target of a fuzzing build for a bounded time.
#
#   run-fuzzers.sh [-B] [-C BUILD_DIR] [-t SECONDS] [-o OUT_DIR] [-k] [TARGET...]
#
# -B configures BUILD_DIR for fuzzing when it is not configured yet (clang,
# ASan+UBSan, coverage instrumentation) and builds the fuzz programs.
# BUILD_DIR (default build-fuzz) is a build configured for fuzzing (see
# tests/reliability/fuzz/meson.build); SECONDS (default 60) is the time
# per target; TARGET names (spec, name, metadata, etcd, ...) default to
# every fuzz-* program the build has.  Each target starts from its seed
# corpus and its regression inputs; the inputs it finds go to a scratch
# corpus under OUT_DIR (default: a temporary directory), never into the
# source tree.  A crash, leak, timeout or failed expectation stops that
# target and leaves the input in OUT_DIR/crashes/: copy it to
# tests/reliability/fuzz/regressions/TARGET/ to make it a regression test.
# With -k a target keeps going after a failure (libFuzzer's fork mode) and
# collects every failing input it meets, for exploring past a known bug.
#
# Prints one line per target ("fuzz TARGET: N runs in S s, ...") and
# exits non-zero when any target failed.
set -uo pipefail

src=$(cd "$(dirname "$0")" && pwd)
build=build-fuzz
seconds=60
out=
keep_going=0
build_first=0
while getopts "BC:t:o:kh" opt; do
    case $opt in
    C) build=$OPTARG ;;
    t) seconds=$OPTARG ;;
    o) out=$OPTARG ;;
    k) keep_going=1 ;;
    B) build_first=1 ;;
    *) sed -n '2,23p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

dir="$build/tests/reliability/fuzz"
if [ $build_first -eq 1 ]; then
    root=$(cd "$src/../../.." && pwd)
    if [ ! -f "$build/build.ninja" ]; then
        setup_log=$(mktemp)
        CC=clang meson setup "$build" "$root" -Dc_args=-fsanitize=fuzzer-no-link \
            -Db_sanitize=address,undefined -Db_lundef=false -Dbench=false \
            >"$setup_log" 2>&1 || { cat "$setup_log" >&2; rm -f "$setup_log"; exit 2; }
        rm -f "$setup_log"
    fi
    progs=$(ninja -C "$build" -t targets all | sed -n 's|^\(tests/reliability/fuzz/fuzz-[a-z0-9_-]*\):.*|\1|p' | sort -u)
    if [ -z "$progs" ]; then
        echo "run-fuzzers: $build is not a fuzzing build (clang with -fsanitize=fuzzer-no-link)" >&2
        exit 2
    fi
    # shellcheck disable=SC2086
    ninja -C "$build" $progs >/dev/null || exit 2
fi
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in "$dir"/fuzz-*; do
        [ -x "$f" ] && [ -f "$f" ] && targets+=("${f##*/fuzz-}")
    done
fi
if [ ${#targets[@]} -eq 0 ]; then
    echo "run-fuzzers: no fuzz-* programs in $dir (configure the build for fuzzing)" >&2
    exit 2
fi
[ -n "$out" ] || out=$(mktemp -d /tmp/procreg-fuzz-XXXXXX)
mkdir -p "$out/crashes"

export G_SLICE=always-malloc
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

failed=0
total=0
for t in "${targets[@]}"; do
    prog="$dir/fuzz-$t"
    if [ ! -x "$prog" ]; then
        echo "fuzz $t: no program $prog" >&2
        failed=1
        continue
    fi
    corpus="$out/corpus/$t"
    # Targets whose registries keep threads and deferred frees between
    # inputs make libFuzzer's per-input leak check (a full LeakSanitizer
    # scan whenever mallocs and frees differ) run on every input; for them
    # leaks are found by the check at exit instead, after every registry
    # is closed.
    extra=()
    case $t in
    metadata|lmdb) extra=(-detect_leaks=0) ;;
    esac
    [ $keep_going -eq 1 ] && extra+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
    asan=$ASAN_OPTIONS
    mkdir -p "$corpus"
    log="$out/$t.log"
    start=$(date +%s)
    # The first folder receives new inputs; the others are only read.
    # (The braces keep the shell's "Aborted" notice out of the output.)
    { ASAN_OPTIONS=$asan nice -n 10 "$prog" -max_total_time="$seconds" -timeout=20 \
        -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 "${extra[@]}" \
        -artifact_prefix="$out/crashes/$t-" \
        "$corpus" "$src/corpus/$t" "$src/regressions/$t" >"$log" 2>&1; } 2>/dev/null
    rc=$?
    took=$(( $(date +%s) - start ))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    # Fork mode prints "#RUNS: cov: ..." lines instead.
    [ -n "$runs" ] || runs=$(sed -n 's/^#\([0-9]*\): cov.*/\1/p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    runs=${runs:-0}
    total=$((total + runs))
    # Slow inputs are reported, not failures; every other artifact is.
    failures=$(ls "$out/crashes/" 2>/dev/null | grep "^$t-" | grep -v "^$t-slow-unit-")
    for slow in "$out/crashes/$t-slow-unit-"*; do
        [ -e "$slow" ] && echo "fuzz $t: slow input (over 10 s): $slow"
    done
    if [ $rc -eq 0 ] && [ -z "$failures" ]; then
        echo "fuzz $t: $runs runs in $took s, coverage ${cov:-?} edges, corpus $(ls "$corpus" | wc -l) new inputs, no failure"
    else
        failed=1
        echo "fuzz $t: FAILED (exit $rc) after $runs runs in $took s; log $log"
        echo "$failures" | sed "/^$/d; s|^|  input: $out/crashes/|"
        grep -E "ERROR|expectation failed|SUMMARY|#[0-9]+ 0x" "$log" | head -25 | sed 's/^/  /'
    fi
done
echo "fuzz total: $total runs; logs and found inputs in $out"
exit $failed
