"""Record the zoo's reference weights (maintainers): model_zoo/reference/index.json and the shipped files.

For every zoo model of the given suites whose data set is on this machine, the
model is trained by its recipe (or read from the checkpoint cache) with
``weights: retrain``; its digest is recorded in the index, and the file is
shipped with the package when the data set is the embedded ``mnist5k`` and
the file is under ``--max-ship-bytes``. Larger models are recorded by digest
only: export them with ``bench zoo export`` and import them elsewhere.

    .venv/bin/python scripts/make_reference_weights.py suites/*.yaml

Entries already in the index are kept unless their model is made again here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch

from bench.data import DataError, load_dataset
from bench.engine.numerics import cpu_model
from bench.suite import load_suite
from model_zoo import MODELS, accuracy, checkpoint_path, get_model, model_key, resolve_recipe
from model_zoo.reference import INDEX, REFERENCE_DIR
from model_zoo.weights import WEIGHTS_SUFFIX, write_weights

SHIPPED_DATASETS = ("mnist5k",)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="+", type=Path)
    parser.add_argument("--max-ship-bytes", type=int, default=1536 * 1024)
    parser.add_argument(
        "--cached-only", action="store_true", help="record only models already in the checkpoint cache (train none)"
    )
    args = parser.parse_args()
    index = json.loads(INDEX.read_text()) if INDEX.exists() else {"format": 1, "weights": []}
    rows = {row["key"]: row for row in index["weights"]}
    done: set[tuple[str, str, str]] = set()
    for path in args.suites:
        suite = load_suite(path)
        for spec in suite.models:
            if spec.external or spec.name not in MODELS:
                continue
            ident = (spec.name, suite.dataset.name, json.dumps(dict(spec.recipe), sort_keys=True))
            if ident in done:
                continue
            done.add(ident)
            try:
                train = load_dataset(suite.dataset.name, "train", **dict(suite.dataset.options))
                test = load_dataset(suite.dataset.name, "test", **dict(suite.dataset.options))
            except DataError as exc:
                print(f"skip {spec.name} on {suite.dataset.name} ({path}): {exc}", file=sys.stderr)
                continue
            key = model_key(
                spec.name, suite.dataset.name, train, resolve_recipe(spec.name, dict(spec.recipe)), suite.seed
            )
            if args.cached_only and not checkpoint_path(spec.name, suite.dataset.name, key).exists():
                print(
                    f"skip {spec.name} on {suite.dataset.name} ({path}): not in the checkpoint cache", file=sys.stderr
                )
                continue
            trained = get_model(
                spec.name, suite.dataset.name, train=train, seed=suite.seed, recipe=dict(spec.recipe), weights="retrain"
            )
            file = f"{spec.name}-{suite.dataset.name}-{trained.key}{WEIGHTS_SUFFIX}"
            target = REFERENCE_DIR / file
            digest = write_weights(trained.model, target)
            size = target.stat().st_size
            ship = suite.dataset.name in SHIPPED_DATASETS and size <= args.max_ship_bytes
            if not ship:
                target.unlink()
            rows[trained.key] = {
                "model": spec.name,
                "dataset": suite.dataset.name,
                "key": trained.key,
                "sha256": digest,
                "bytes": size,
                "seed": suite.seed,
                "recipe": trained.recipe.as_dict(),
                "file": file if ship else None,
                "clean_accuracy": round(accuracy(trained.model, test.x, test.y, device=torch.device("cpu")), 4),
                "made_on": f"{cpu_model()}, torch {torch.__version__}, {dt.date.today().isoformat()}",
            }
            where = "shipped" if ship else "digest only"
            print(f"{spec.name:16} {suite.dataset.name:14} {digest[:12]} {size:>9} bytes {where}")
    index["weights"] = sorted(rows.values(), key=lambda r: (r["dataset"], r["model"], r["key"]))
    INDEX.write_text(json.dumps(index, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
