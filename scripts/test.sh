#!/usr/bin/env bash
# Builds forestgate and runs every test:
#   0. the layering check (scripts/check-layers.py)
#   1. unit tests (meson), release build
#   2. integration tests against a real Dovecot with real clients (pytest)
#   3. the same two under AddressSanitizer + UndefinedBehaviorSanitizer
#   4. the threads' hand-offs under ThreadSanitizer: the directory, backend and
#      TLS integration tests
#   5. each libFuzzer target for FG_FUZZ_SECONDS (default 15), and the planted
#      bug that proves the fuzzers' libraries are instrumented
#   6. formatting against .clang-format
# Ends with the line "N passed, N failed". Exit status 0 only if none failed.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test || { echo "0 passed, 1 failed"; exit 1; }

PY=/usr/bin/python3 # Debian's: it sees python3-pytest
FUZZ_SECONDS=${FG_FUZZ_SECONDS:-15} # ten targets: about 3 minutes with the build
passed=0
failed=0
failures=()

# Each stage says how long it took, so a suite that grows toward CI's limit
# shows where: stage NAME starts one, and ends the one before.
stage_name=""
stage_start=$SECONDS
stage() {
    [ -z "$stage_name" ] || echo "-- $stage_name: $((SECONDS - stage_start)) s"
    stage_name=$1
    stage_start=$SECONDS
    [ -z "$1" ] || echo "== $1"
}

# Adds the counts of one stage: count NAME PASSED FAILED
count() {
    passed=$((passed + $2))
    failed=$((failed + $3))
    [ "$3" -eq 0 ] || failures+=("$1: $3 failed")
}

build() { # build DIR MESON-OPTIONS...
    scripts/build.sh "$@"
}

unit() { # unit DIR LABEL
    local log
    # UBSan only prints unless told to stop: a report must fail the test.
    log=$(UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        meson test -C "$1" --suite unit --print-errorlogs 2>&1)
    echo "$log" | grep -E "^ *[0-9]+/[0-9]+ " || true
    local ok fail
    ok=$(echo "$log" | sed -n 's/^Ok: *\([0-9]*\).*/\1/p')
    fail=$(echo "$log" | sed -n 's/^Fail: *\([0-9]*\).*/\1/p')
    [ -n "$ok" ] || { count "$2 unit" 0 1; return; }
    count "$2 unit" "$ok" "${fail:-0}"
    [ "${fail:-0}" -eq 0 ] || echo "$log" | tail -50
}

integration() { # integration BINARY LABEL [TEST-FILES...]: all of tests/integration by default
    local out=/tmp/fg-pytest-$$.txt bin=$1 label=$2
    shift 2
    [ $# -gt 0 ] || set -- tests/integration
    FG_BIN=$bin FGB_BIN=$(dirname "$bin")/bench/forestgate-bench \
        FGB_REFPOINTS=$(dirname "$bin")/bench/forestgate-refpoints $PY -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$out" | tail -40
    local summary ok fail err
    summary=$(grep -E "^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)" "$out" | tail -1)
    ok=$(echo "$summary" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+" || echo 0)
    fail=$(echo "$summary" | grep -oE "[0-9]+ failed" | grep -oE "[0-9]+" || echo 0)
    err=$(echo "$summary" | grep -oE "[0-9]+ error" | grep -oE "[0-9]+" || echo 0)
    [ -n "$summary" ] || fail=1
    count "$label integration" "${ok:-0}" $((${fail:-0} + ${err:-0}))
    rm -f "$out"
}

# libFuzzer's last status line: "runs N, cov N, ft N".
fuzz_stats() { # fuzz_stats LOG
    grep -aE '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$1" | tail -1 |
        sed -E 's/^#([0-9]+).*cov: ([0-9]+) ft: ([0-9]+).*/runs \1, cov \2, ft \3/'
}

# Runs one target on a copy of its seeds (new inputs must not land in the
# repository), with its dictionary. A crash input is kept in build-fuzz/crashes/.
fuzz() { # fuzz TARGET
    local name=${1#fuzz_} work
    work=$(mktemp -d)
    mkdir "$work/corpus"
    cp tests/fuzz/corpus/"$name"/* "$work/corpus/"
    if UBSAN_OPTIONS=print_stacktrace=1 build-fuzz/tests/"$1" -max_total_time="$FUZZ_SECONDS" \
        -timeout=10 -dict=tests/fuzz/"$name".dict -artifact_prefix="$work/" "$work/corpus" \
        >"$work/log" 2>&1; then
        echo "$1: $(fuzz_stats "$work/log")"
        count "$1" 1 0
    else
        tail -30 "$work/log"
        mkdir -p build-fuzz/crashes
        for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
            [ -e "$a" ] && cp "$a" build-fuzz/crashes/"$1"-"$(basename "$a")" &&
                echo "$1: input kept as build-fuzz/crashes/$1-$(basename "$a")"
        done
        count "$1" 0 1
    fi
    rm -rf "$work"
}

# The planted one-byte over-read (tests/fuzz/planted/) must be caught: it is
# found only when the library is built with libFuzzer's and ASan's
# instrumentation, as every fuzzed library is.
fuzz_planted() {
    local work start=$SECONDS
    work=$(mktemp -d)
    mkdir "$work/corpus"
    build-fuzz/tests/fuzz_planted -max_total_time=60 -artifact_prefix="$work/" "$work/corpus" \
        >"$work/log" 2>&1
    if grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" "$work/log" &&
        grep -q " in planted_parse " "$work/log"; then
        echo "fuzz_planted: the planted over-read caught in $((SECONDS - start)) s"
        count "fuzz_planted" 1 0
    else
        tail -5 "$work/log"
        echo "fuzz_planted: the planted over-read was NOT caught in 60 s: instrumentation is missing"
        count "fuzz_planted" 0 1
    fi
    rm -rf "$work"
}

stage "layers"
# Every #include points down the stack (base, then proto/tls/directory, then
# core and bench): the script prints the order and the folder graph.
if $PY scripts/check-layers.py; then
    count "check-layers" 1 0
else
    count "check-layers" 0 1
fi

stage "release build"
if build build -Dbuildtype=release; then
    count "build" 1 0
    unit build release
    integration build/forestgate release
else
    count "release build" 0 1
fi

stage "ASan + UBSan build"
if build build-asan -Dbuildtype=debug -Db_sanitize=address,undefined -Djemalloc=false; then
    count "asan build" 1 0
    unit build-asan asan
    # The package builds its own release binary: once, in the release stage.
    integration build-asan/forestgate asan tests/integration \
        --ignore=tests/integration/test_package.py
else
    count "asan build" 0 1
fi

# ThreadSanitizer where the threads meet: the directory pool hands its answers
# to the workers (the directory tests); the workers share the backend hosts'
# table (backend, failover, routes), the counters and the TLS certificates
# (tls), the connection limits' table (limits), and the throttle's tables,
# which workers and directory threads share (throttle), and a Kerberos
# logon's state, which a directory thread steps and a worker reads (kerberos). Any report in
# forestgate's log fails its test (tests/lib/forestgate.py). A route cache's
# tests, test_route_cache*.py, join once they exist. The other integration
# tests ran clean under it when this stage was added; they cost minutes and
# cross no other hand-off.
stage "ThreadSanitizer build"
if build build-tsan -Dbuildtype=debug -Db_sanitize=thread -Djemalloc=false; then
    count "tsan build" 1 0
    tsan_tests=(tests/integration/test_directory_ldif.py tests/integration/test_directory_ldap.py
        tests/integration/test_backend.py tests/integration/test_backend_failover.py
        tests/integration/test_backend_routes.py tests/integration/test_tls.py
        tests/integration/test_limits.py tests/integration/test_throttle.py \
        tests/integration/test_throttle_store.py tests/integration/test_kerberos.py)
    for t in tests/integration/test_route_cache*.py; do
        [ -e "$t" ] && tsan_tests+=("$t")
    done
    # GCC 12's ThreadSanitizer cannot start where the kernel randomises mmap
    # with more than 28 bits (vm.mmap_rnd_bits = 32, as on Ubuntu's kernels
    # since 6.5): "FATAL: ThreadSanitizer: unexpected memory mapping". There
    # the tests run without address randomisation.
    tsan_pre=""
    build-tsan/forestgate --version >/dev/null 2>&1 || tsan_pre="setarch $(uname -m) -R"
    tsan_py="${tsan_pre:+$tsan_pre }$PY"
    # The route cache's stress run: readers, inserters, replacers and a
    # flusher on six threads; any report fails it (exit status 66).
    $tsan_pre env TSAN_OPTIONS="halt_on_error=0:exitcode=66:suppressions=$PWD/tests/tsan.supp" \
        build-tsan/tests/test_route_cache 3 2>&1 | tail -20
    if [ "${PIPESTATUS[0]}" -eq 0 ]; then
        count "tsan test_route_cache" 1 0
    else
        count "tsan test_route_cache" 0 1
    fi
    # The connection limits' table: threads acquiring and releasing one
    # address and one mailbox at their limits, and other keys beside them.
    $tsan_pre env TSAN_OPTIONS="halt_on_error=0:exitcode=66" build-tsan/tests/test_limits 2 2>&1 |
        tail -5
    if [ "${PIPESTATUS[0]}" -eq 0 ]; then
        count "tsan test_limits" 1 0
    else
        count "tsan test_limits" 0 1
    fi
    PY=$tsan_py integration build-tsan/forestgate tsan "${tsan_tests[@]}"
else
    count "tsan build" 0 1
fi

stage "fuzzing, ${FUZZ_SECONDS}s per target"
if CC=clang build build-fuzz -Dfuzz=true -Djemalloc=false; then
    fuzz_planted
    for src in tests/fuzz/fuzz_*.c; do
        fuzz "$(basename "$src" .c)"
    done
else
    count "fuzz build" 0 1
fi

stage "formatting"
unformatted=$(clang-format --dry-run base/*.[ch] core/*.[ch] proto/*.[ch] directory/*.[ch] tls/*.[ch] bench/*.[ch] tests/unit/*.[ch] \
    tests/fuzz/*.[ch] tests/fuzz/planted/*.[ch] 2>&1 |
    grep -c "warning:" || true)
if [ "$unformatted" -eq 0 ]; then
    count "clang-format" 1 0
else
    echo "clang-format: $unformatted places differ; run clang-format -i on base core proto directory tls bench tests/unit tests/fuzz"
    count "clang-format" 0 1
fi

stage ""
echo "-- all stages: $SECONDS s"
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
