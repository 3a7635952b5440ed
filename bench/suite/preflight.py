"""What ``bench run`` refuses about a suite once its data is loaded, before any model is built or cell runs.

One function for both commands: ``bench run`` raises the first problem (``bench.engine.runner``), and
``bench validate`` reports every one (``bench.cli.validate``), so the two cannot disagree on a suite.
"""

from __future__ import annotations

from collections.abc import Iterator

from bench.attacks import make_attack
from bench.data import DataSplit
from bench.suite.schema import Suite
from bench.suite.validate import eps_bound_problems


def data_problems(suite: Suite, data: DataSplit) -> Iterator[str]:
    """Target classes the data set lacks, and epsilons its bounds and shape make meaningless (l2, patch)."""
    for i, spec in enumerate(suite.attacks):
        if spec.target_class is not None and spec.target_class >= data.num_classes:
            yield (
                f"attacks[{i}].target_class: class {spec.target_class} does not exist: "
                f"data set {data.name!r} has classes 0..{data.num_classes - 1}"
            )
        norm = make_attack(spec.name, **spec.params).norm.value
        field = f"attacks[{i}].epsilons" if spec.epsilons is not None else "epsilons"
        for problem in eps_bound_problems(
            norm, suite.epsilons_for(spec), width=data.bounds.width, input_shape=data.input_shape
        ):
            yield f"{field}: {problem} (data set {data.name!r})"
