#!/usr/bin/env bash
# `make bench`: the machine, the release builds, the criterion benches (handler overhead), then
# every other figure (size, cold start, start-up steps, warm latency, peak RSS, calls per
# operation). Extra arguments pick sections of the runner: tools/bench/run.sh cold warm
# Figures only: nothing here fails on timing.
set -euo pipefail
cd "$(dirname "$0")/../.."
CARGO="${CARGO:-cargo}"

echo "==> machine"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "nproc: $(nproc)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "load average (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(rustc --version)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# The services print one CloudWatch EMF line per metric to stdout (Lambda turns them into
# metrics); in-process here, they would bury the figures.
emf_filtered() { grep --line-buffered -v '"_aws":' || true; }

target="$($CARGO metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
export CARGO_TARGET_DIR="$target"

echo "==> release builds"
$CARGO build --release -p stk-push -p stk-callback -p payment-status -p reconcile -p payment-events -p webhook-delivery -p bench-hello -p bench

# Opt-in (a whole second build): BENCH_ARM64=1 also builds the aarch64 bootstraps with
# cargo lambda (into BENCH_ARM64_TARGET, default the same target directory) and sizes them.
if [ "${BENCH_ARM64:-0}" = 1 ]; then
  echo "==> cargo lambda build --release --arm64"
  arm_target="${BENCH_ARM64_TARGET:-$target}"
  CARGO_TARGET_DIR="$arm_target" cargo lambda build --release --arm64 \
    -p stk-push -p stk-callback -p payment-status -p reconcile
  export BENCH_LAMBDA_DIR="$arm_target/lambda"
fi

if [ $# -eq 0 ] || [[ " $* " == *" criterion "* ]]; then
  echo "==> criterion: handler overhead without DynamoDB"
  # Only this run's results: the summary reads every benchmark found under criterion/.
  rm -rf "$target/criterion"
  $CARGO bench -p bench --bench handler | emf_filtered
fi

echo "==> figures"
"$target/release/bench" "$@" | emf_filtered
