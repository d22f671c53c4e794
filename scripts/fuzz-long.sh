#!/usr/bin/env bash
# Fuzzes for as long as asked: scripts/fuzz-long.sh SECONDS [TARGET...]
#
# Each target (default: every tests/fuzz/fuzz_*.c; name them as fuzz_ldif or
# ldif) runs for SECONDS in turn, one process: on two cores, -fork or -jobs
# would only share them. Its corpus grows in tests/fuzz/corpus-run/NAME (not
# committed; kept from run to run) from the seeds in tests/fuzz/corpus/NAME,
# with the dictionary tests/fuzz/NAME.dict. libFuzzer's log is
# tests/fuzz/corpus-run/NAME.log and a crash input
# tests/fuzz/corpus-run/NAME-crash-<sha1>.
#
# Prints, per target: seconds, executions, coverage edges (cov), features
# (ft), corpus files, and the crash input if any. Exit status 0 when no
# target crashed.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
fi
secs=$1
shift
CC=clang scripts/build.sh build-fuzz -Dfuzz=true -Djemalloc=false || exit 1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for src in tests/fuzz/fuzz_*.c; do
        targets+=("$(basename "$src" .c)")
    done
fi

crashed=0
for t in "${targets[@]}"; do
    name=${t#fuzz_}
    bin=build-fuzz/tests/fuzz_$name
    if [ ! -x "$bin" ] || [ ! -d tests/fuzz/corpus/"$name" ]; then
        echo "fuzz_$name: no such target"
        crashed=1
        continue
    fi
    run=tests/fuzz/corpus-run/$name
    log=tests/fuzz/corpus-run/$name.log
    mkdir -p "$run"
    start=$SECONDS
    UBSAN_OPTIONS=print_stacktrace=1 "$bin" -max_total_time="$secs" -timeout=10 \
        -dict=tests/fuzz/"$name".dict -artifact_prefix=tests/fuzz/corpus-run/"$name"- \
        "$run" tests/fuzz/corpus/"$name" >"$log" 2>&1
    rc=$?
    stats=$(grep -aE '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 |
        sed -E 's/^#([0-9]+).*cov: ([0-9]+) ft: ([0-9]+).*/runs \1, cov \2, ft \3/')
    echo "fuzz_$name: $((SECONDS - start)) s, $stats, corpus $(find "$run" -type f | wc -l) files"
    if [ $rc -ne 0 ]; then
        artifact=$(grep -aoE 'Test unit written to .*' "$log" | tail -1 | sed 's/Test unit written to //')
        echo "fuzz_$name: CRASHED (exit $rc): ${artifact:-no input written}; log $log"
        crashed=1
    fi
done
exit $crashed
