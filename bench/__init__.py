"""Adversarial robustness benchmark harness.

The public entry points are the registries (`bench.data.DATASETS`,
`model_zoo.MODELS`, `bench.attacks.ATTACKS`), `bench.suite.load_suite` and
`bench.engine.runner.run_suite`; the `bench` command wraps them. For a model of your own in
a notebook: `bench.evaluate(model, x, y, attack="pgd", epsilons=[...])` (`bench/api.py`).
"""

import importlib
from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # PEP 562 lazy export: `bench.evaluate` needs torch and the engine, which `bench --help` must not load.
    if name == "evaluate":
        return importlib.import_module("bench.api").evaluate
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
