#!/usr/bin/env bash
# Runs every fuzz target for a bounded time on the stable toolchain and prints, per target, the
# executions reached, the speed and the crashes found. Exits non-zero if any target crashed.
#
#   FUZZ_SECONDS=300 fuzz/run.sh            # all targets, 300 s each
#   FUZZ_TARGETS="phone" fuzz/run.sh        # one target
#
# Coverage comes from `--sanitizer none`: cargo-fuzz then passes only stable rustc flags
# (-Cpasses=sancov-module and the sanitizer-coverage LLVM options), so no nightly is needed.
# The code under test is safe Rust, so panics, debug assertions and overflow checks are the
# oracle; AddressSanitizer would halve the speed for little gain.
set -euo pipefail

cd "$(dirname "$0")"
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-callback push_request phone}
# Its own target dir: the instrumented build would otherwise invalidate the normal one.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR_FUZZ:-$HOME/.cache/mpesa/target-fuzz}
CARGO=${CARGO:-cargo}

if ! $CARGO fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    $CARGO install cargo-fuzz --locked
fi

echo "==> building fuzz targets (instrumented, release with debug assertions)"
$CARGO fuzz build --sanitizer none

mkdir -p logs
summary=()
crashed=0
for target in $FUZZ_TARGETS; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="logs/$target.log"
    echo "==> fuzzing $target for ${FUZZ_SECONDS}s (log: fuzz/$log)"
    status=0
    # corpus/<target> collects what the fuzzer finds; seeds/<target> is read, never written.
    $CARGO fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
    execs=$(stat number_of_executed_units)
    speed=$(stat average_exec_per_sec)
    crashes=$(find "artifacts/$target" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) | sort)
    if [[ $status -ne 0 || -n $crashes ]]; then
        crashed=1
        count=$(printf '%s\n' "$crashes" | grep -c . || true)
        summary+=("$(printf '%-13s execs=%-10s exec/s=%-7s crashes=%s (exit %s) %s' \
            "$target" "${execs:-?}" "${speed:-?}" "$count" "$status" "$(echo $crashes)")")
        tail -n 30 "$log"
    else
        # libFuzzer's own count: the corpus folder also keeps inputs it has since replaced.
        done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
        cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
        corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")
        summary+=("$(printf '%-13s execs=%-10s exec/s=%-7s crashes=0 edges=%s corpus=%s' \
            "$target" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${corp:-?}")")
    fi
done

echo "==> fuzz summary (${FUZZ_SECONDS}s per target)"
printf '%s\n' "${summary[@]}"
if [[ $crashed -ne 0 ]]; then
    echo "Reproduce: CARGO_TARGET_DIR=$CARGO_TARGET_DIR cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>"
    echo "Minimise:  CARGO_TARGET_DIR=$CARGO_TARGET_DIR cargo fuzz tmin --sanitizer none <target> fuzz/artifacts/<target>/<file>"
fi
exit $crashed
