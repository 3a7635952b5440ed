#!/usr/bin/env bash
# Regenerate every screenshot of the README and the documentation site (docs/img/: the MLflow experiment page,
# the parent run with its params and tags, a nested run's charts, the report of a run and a comparison of two
# runs) from a fresh quickstart run and a real `mlflow server`, so they are generated, never hand-edited.
#
# usage: bash scripts/docs_screenshots.sh [SUITE]     (default suites/quickstart.yaml)
# needs: the project's .venv and Debian's chromium. Models come from $BENCH_CACHE as usual
# (the first quickstart trains them). Everything else lives in a temporary folder, removed at the end.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
V="$REPO/.venv/bin"
SUITE=$(realpath "${1:-$REPO/suites/quickstart.yaml}")
WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# 1. the run, into a store of its own (cwd = WORK: MLflow puts a sqlite store's artifacts in ./mlruns)
STORE="sqlite:///$WORK/mlflow.db"
(cd "$WORK" && MLFLOW_TRACKING_URI="$STORE" "$V/bench" run "$SUITE" --out "$WORK/run" | tee "$WORK/run.log")
RUN_ID=$(sed -n 's/^MLflow parent run: \([0-9a-f]*\) .*/\1/p' "$WORK/run.log")
[ -n "$RUN_ID" ] || { echo "no MLflow parent run in the output of bench run" >&2; exit 1; }

# 2. MLflow's own UI over that store
(cd "$WORK" && MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec "$V/mlflow" server --host 127.0.0.1 --port "$PORT" \
  --workers 1 --backend-store-uri "$STORE" >"$WORK/server.log" 2>&1) &
SERVER_PID=$!
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 1; done

# 3. the two views, driven over DevTools like tests/test_mlflow_ui_browser.py (which writes the same views)
cd "$REPO/tests"
"$V/python" - "$WORK" "http://127.0.0.1:$PORT" "$RUN_ID" <<'EOF'
import base64, sys, time
from pathlib import Path

from mlflow.tracking import MlflowClient
from test_mlflow_ui_browser import EXPAND, TEXT
from test_report_browser import Chromium

from bench.tracking import review_links

work, uri, run_id = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
client = MlflowClient(tracking_uri=uri)
parent = client.get_run(run_id)
children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
child = sorted(children, key=lambda r: r.info.run_name)[0]
browser = Chromium(work / "profile")
browser.call("Page.enable")


def wait(needles: list[str]) -> None:
    deadline = time.monotonic() + 120
    while not all(n in str(browser.evaluate(TEXT)) for n in needles):
        if time.monotonic() > deadline:
            raise SystemExit(f"{needles} not on the page")
        time.sleep(0.5)


def show(url: str, needles: list[str], height: int, out: str, then: list[str] | None = None) -> None:
    browser.call("Emulation.setDeviceMetricsOverride", width=1600, height=height, deviceScaleFactor=1, mobile=False)
    browser.call("Page.navigate", url=url)
    wait(needles)
    browser.evaluate("[...document.querySelectorAll('button[aria-label=Close]')].forEach(b => b.click())")
    if then:  # expand the parent row, then wait for the nested runs
        browser.evaluate(EXPAND)
        wait(then)
    time.sleep(2)
    png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    (work / out).write_bytes(png)


try:
    _, url = review_links(run_id, uri)
    show(url.split("/runs/")[0] + "?workflowType=machine_learning", [parent.info.run_name], 700,
         "mlflow_experiment.png", then=[r.info.run_name for r in children])
    _, url = review_links(run_id, uri)
    show(url, [parent.info.run_name, "weights.lenet"], 1300, "mlflow_parent_run.png")
    _, url = review_links(child.info.run_id, uri)
    show(url.replace("?", "/model-metrics?"), ["robust_accuracy_linf"], 1500, "mlflow_run_charts.png")
finally:
    browser.close()
EOF

# 3b. the report of that run, and a comparison with a second run on the first 500 digits (a banner says the data differ)
"$V/bench" run "$SUITE" --no-mlflow --limit 500 --quiet --out "$WORK/run500" >/dev/null
"$V/bench" report "$WORK/run" "$WORK/run500" --out "$WORK/compare" >/dev/null
for pair in "run/report/report.html:report.png" "compare/report.html:report_comparison.png"; do
  chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
    --user-data-dir="$WORK/chromium" --window-size=1280,2200 --hide-scrollbars \
    --screenshot="$WORK/${pair#*:}" "file://$WORK/${pair%%:*}" >/dev/null 2>&1
done

# 4. small PNGs for the README and the site (Pillow, a matplotlib dependency: 900 px wide, a 128-colour palette)
mkdir -p "$REPO/docs/img"
"$V/python" - "$WORK" "$REPO/docs/img" <<'EOF'
import sys
from pathlib import Path

from PIL import Image

work, out = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("mlflow_experiment.png", "mlflow_parent_run.png", "mlflow_run_charts.png", "report.png", "report_comparison.png"):
    image = Image.open(work / name).convert("RGB")
    image = image.resize((900, round(image.height * 900 / image.width)), Image.Resampling.LANCZOS)
    image.quantize(colors=128).save(out / name, optimize=True)
    print(out / name)
EOF
