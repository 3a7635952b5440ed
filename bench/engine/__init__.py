"""The engine: runs a suite's cells and writes the run directory (``run_suite`` and its parts).

Modules, in the order of the data flow: :mod:`~bench.engine.models` (zoo and
external models, the per-process model cache), :mod:`~bench.engine.model_checks`
(logits, determinism, eval mode, zero gradients), :mod:`~bench.engine.cell` (one
model x attack sweep, tidy rows, ``cells/<id>/``), :mod:`~bench.engine.parallel`
(joblib backends, torch threads, dask), :mod:`~bench.engine.finish` (results,
figures, cross-check, report, MLflow) and :mod:`~bench.engine.runner` (``run_suite``).
"""

from bench.engine.cell import POOL_BATCHES, CellOutcome, CellTask, evaluate_cell, load_cell, pool_size, run_cell, tidy
from bench.engine.finish import RunOutcome, TrackingWarning
from bench.engine.model_checks import ModelOutputError, check_logits, model_checks, zero_gradient_fraction
from bench.engine.models import ModelRef, prepare_models, resolve_device, zoo_model
from bench.engine.runner import run_suite
from bench.rundir import RunError

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
