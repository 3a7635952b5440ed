#!/usr/bin/env bash
# The project's robustness regression gate: run suites/regression.yaml on the embedded
# mnist5k data (no MLflow) into a temporary run directory and `bench check` it against
# the committed baselines/regression.json. Exit code: 0 pass, 1 regression, 2 bad config.
# Set BENCH_CHECK_MARKDOWN / BENCH_CHECK_JUNIT to keep the summary and the JUnit XML.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH="${BENCH:-.venv/bin/bench}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$BENCH" run suites/regression.yaml --no-mlflow --out "$work/run"
"$BENCH" check "$work/run" --baseline baselines/regression.json \
    --markdown "${BENCH_CHECK_MARKDOWN:-$work/check.md}" \
    --junit "${BENCH_CHECK_JUNIT:-$work/check.xml}"
