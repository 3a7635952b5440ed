"""The regression gate (`bench check`): a run against a baseline file and rules, aware of sampling noise.

Modules: :mod:`~bench.gate.baseline` (the baseline file: building, reading,
writing), :mod:`~bench.gate.compare` (items, tests, verdict),
:mod:`~bench.gate.exact` (the weights' identity per model and, with the same
weights, the exact per-sample comparison of reproducible attacks),
:mod:`~bench.gate.render` (Markdown and JUnit). The rules' schema is
:mod:`bench.suite.rules`; baselines kept in MLflow are :mod:`bench.tracking`'s.
"""
