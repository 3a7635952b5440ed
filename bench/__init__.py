"""Adversarial robustness benchmark harness.

The public entry points are the registries (`bench.data.DATASETS`,
`model_zoo.MODELS`, `bench.attacks.ATTACKS`), `bench.suite.load_suite` and
`bench.engine.runner.run_suite`; the `bench` command wraps them.
"""

__version__ = "0.1.0"
