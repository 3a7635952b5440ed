"""The engine: runs a suite's cells and writes the run directory (``run_suite`` and its parts).

Modules, in the order of the data flow: :mod:`~bench.engine.models` (zoo and
external models, the per-process model cache), :mod:`~bench.engine.model_checks`
(logits, determinism, eval mode, zero gradients), :mod:`~bench.engine.cell` (one
model x attack sweep, tidy rows, ``cells/<id>/``), :mod:`~bench.engine.parallel`
(joblib backends, torch threads, dask), :mod:`~bench.engine.certify_cell` and
:mod:`~bench.engine.bracket` (certification cells, the soundness check, the bracket),
:mod:`~bench.engine.finish` (results, figures, cross-check, report, MLflow) and :mod:`~bench.engine.runner`
(``run_suite``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what static analysis sees; at run time each name loads its module on first use
    from bench.engine.cell import (
        POOL_BATCHES,
        CellOutcome,
        CellTask,
        evaluate_cell,
        load_cell,
        pool_size,
        run_cell,
        tidy,
    )
    from bench.engine.finish import RunOutcome, TrackingWarning
    from bench.engine.model_checks import (
        ModelOutputError,
        check_logits,
        gradient_logits_exact,
        model_checks,
        zero_gradient_fraction,
    )
    from bench.engine.models import ModelRef, prepare_models, resolve_device, zoo_model
    from bench.engine.runner import run_suite
    from bench.rundir import RunError

_HOMES = {
    **dict.fromkeys(
        ("POOL_BATCHES", "CellOutcome", "CellTask", "evaluate_cell", "load_cell", "pool_size", "run_cell", "tidy"),
        "bench.engine.cell",
    ),
    **dict.fromkeys(("RunOutcome", "TrackingWarning"), "bench.engine.finish"),
    **dict.fromkeys(
        ("ModelOutputError", "check_logits", "gradient_logits_exact", "model_checks", "zero_gradient_fraction"),
        "bench.engine.model_checks",
    ),
    **dict.fromkeys(("ModelRef", "prepare_models", "resolve_device", "zoo_model"), "bench.engine.models"),
    "run_suite": "bench.engine.runner",
    "RunError": "bench.rundir",
}
"""Where each exported name lives. The package loads none of them up front: a cell worker
(a loky or dask process) unpickles ``bench.engine.cell.run_cell`` and needs only the cell's
modules, not the figures, report and MLflow code of :mod:`bench.engine.finish` (1.4 of the
3.4 s a worker spent importing before its first cell)."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bench.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "POOL_BATCHES",
    "CellOutcome",
    "CellTask",
    "ModelOutputError",
    "ModelRef",
    "RunError",
    "RunOutcome",
    "TrackingWarning",
    "check_logits",
    "evaluate_cell",
    "gradient_logits_exact",
    "load_cell",
    "model_checks",
    "pool_size",
    "prepare_models",
    "resolve_device",
    "run_cell",
    "run_suite",
    "tidy",
    "zero_gradient_fraction",
    "zoo_model",
]
