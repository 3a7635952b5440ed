"""Executes a suite: ``run_suite`` is the list of phases, each a named function.

1. check the request (backend, n_jobs, device) and claim the run directory;
2. load the data split and select the evaluated samples (:func:`bench.data.select`);
3. start the manifest (versions, git commit, data digest, seeds, attacks);
4. train or load every model in this process (so parallel workers never race
   on the checkpoint cache), run the model checks and record clean accuracy;
5. run each (model, attack) cell through ``joblib.Parallel``; a cell evaluates
   the whole epsilon sweep batch by batch and writes ``cells/<id>/``
   atomically, so a finished cell is never lost (resume reads them back);
6. gather the rows into ``results.csv``/``results.parquet`` and per-sample
   flags into ``samples.parquet`` (the manifest records their sha256 and says
   ``incomplete``), draw figures, run the cross-check against ART, render the
   report, mark the manifest ``finished`` and mirror the run into MLflow; a
   failure after the results raises ``RunIncomplete`` (``--resume`` completes it).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import progress
from bench.attacks.registry import attack_record
from bench.data import DataError, DataSplit, load_dataset, select
from bench.engine import numerics
from bench.engine.bracket import check_certifiable, run_certify_cells
from bench.engine.cell import CellOutcome, CellTask, load_cell, run_cell
from bench.engine.finish import (
    RunOutcome,
    completing,
    draw_figures,
    finish_manifest,
    mark_finished,
    mirror_to_mlflow,
    write_crosscheck_table,
    write_figures,
    write_report,
    write_results,
)
from bench.engine.models import ModelRef, prepare_models, resolve_device
from bench.engine.parallel import WorkerPlan, check_backend, choose_workers, predicted_gain, run_tasks
from bench.limits import cap_n_jobs
from bench.rundir import (
    RunDir,
    RunError,
    atomic_write_text,
    claim_run_dir,
    default_run_dir,
    ensure_writable,
    start_manifest,
    write_json,
)
from bench.suite import Suite, check_n_jobs, dump_yaml, expand
from bench.suite.preflight import data_problems
from reports import drawing


def run_suite(
    suite: Suite,
    *,
    out: Path | None = None,
    n_jobs: int | None = None,
    limit: int | None = None,
    track: bool | None = None,
    device: str | None = None,
    echo: Callable[[str], None] | None = print,
    resume: bool = False,
    backend: str | None = None,
    scheduler: str | None = None,
    exact_workers: bool = False,
    trust_edited: bool = False,
) -> RunOutcome:
    """Run every cell of ``suite`` and write its run directory; returns the tidy results.

    With ``resume`` the run directory ``out`` of an interrupted run of the same
    suite is continued: finished cells are read back, the others are run.
    ``backend``/``scheduler`` override the suite's joblib backend (loky,
    threading, dask) and dask.distributed scheduler address. With more than one
    worker on a local CPU backend the cells run serially when parallel workers are
    predicted to be slower (:func:`bench.engine.parallel.choose_workers`), unless
    ``exact_workers``; the manifest's ``workers`` says what ran and why. A resumed run's finished cells are
    checked against the digests their ``done.json`` recorded before anything else runs; ``trust_edited``
    accepts edited ones, and the manifest's ``edited`` then says which (the report's first line shows it).
    """
    wall = time.perf_counter()
    backend = backend or suite.backend
    scheduler = scheduler if scheduler is not None else suite.scheduler
    check_request(backend, scheduler, n_jobs)
    dev = resolve_device(device or suite.device)
    run = RunDir(Path(out) if out is not None else default_run_dir(suite.name))
    ensure_writable(run)
    resumed_uid = claim_run_dir(run, suite_digest=suite.digest, resume=resume, limit=limit)
    finished, edited = finished_cells(run, suite, trust_edited=trust_edited)  # checked before any work

    data = evaluation_data(suite, limit)
    manifest = begin_manifest(run, suite, data, dev, limit=limit, resumed_uid=resumed_uid)
    if edited:
        manifest["edited"] = edited

    prep = time.perf_counter()
    refs, model_info = prepare_models(suite, data, dev)
    write_json(run.models, model_info)
    check_certifiable(suite, refs, dev)
    prep_seconds = time.perf_counter() - prep

    jobs = cap_n_jobs(n_jobs if n_jobs is not None else suite.n_jobs, source="--n-jobs" if n_jobs else "n_jobs")
    ordered, plan = run_cells(
        run,
        suite,
        refs,
        data,
        dev,
        jobs=jobs,
        backend=backend,
        scheduler=scheduler,
        echo=echo,
        exact=exact_workers,
        finished=finished,
    )

    certified, cert_edited = run_certify_cells(
        run, suite, refs, data, dev, plan=plan, backend=backend, scheduler=scheduler, echo=echo, trust=trust_edited
    )
    if cert_edited:
        manifest["edited"] = [*manifest.get("edited", []), *cert_edited]
    results = write_results(run, ordered, certified)
    finish_manifest(
        run,
        manifest,
        ordered + certified,
        model_info,
        wall=wall,
        prep_seconds=prep_seconds,
        backend=backend,
        scheduler=scheduler,
        workers=plan.as_manifest(),
    )
    outcome = RunOutcome(run, results, manifest)
    # the curves are drawn once, for figures/ and the report, on the drawing process when one runs:
    # the cross-check and the report's tables go on meanwhile
    curves: list[drawing.Pending[dict[str, bytes]]] = []
    completing(run, manifest, "figures", lambda: curves.append(draw_figures(results)))
    if suite.crosscheck:
        completing(run, manifest, "cross-check", lambda: write_crosscheck_table(run, suite, refs, data, dev, echo))
    completing(run, manifest, "report", lambda: write_report(run, curves[0]))
    completing(run, manifest, "figures", lambda: write_figures(run, curves[0]))
    completing(run, manifest, "finished manifest", lambda: mark_finished(run, manifest))
    if track if track is not None else suite.tracking.enabled:
        mirror_to_mlflow(outcome)
    return outcome


def check_request(backend: str, scheduler: str | None, n_jobs: int | None) -> None:
    """Refuse a backend/scheduler combination or an ``--n-jobs`` value before anything is written."""
    check_backend(backend, scheduler)
    if n_jobs is not None:
        try:
            check_n_jobs(n_jobs)
        except ValueError as exc:
            raise RunError(f"--n-jobs: {exc}") from None


def evaluation_data(suite: Suite, limit: int | None) -> DataSplit:
    """The evaluated samples (``dataset.offset``, ``dataset.n``, ``--limit``), checked against the attacks."""
    full = load_dataset(suite.dataset.name, suite.dataset.split, **suite.dataset.options)
    try:
        data = select(full, offset=suite.dataset.offset, n=suite.dataset.n, limit=limit)
    except DataError as exc:
        raise RunError(str(exc)) from None
    for problem in data_problems(suite, data):  # the same checks as bench validate (bench/suite/preflight.py)
        raise RunError(problem)
    return data


def begin_manifest(
    run: RunDir, suite: Suite, data: DataSplit, device: torch.device, *, limit: int | None, resumed_uid: str | None
) -> dict[str, Any]:
    """Write ``suite.yaml`` (resolved) and a ``running`` manifest; returns the manifest to finish later."""
    manifest = start_manifest(
        run,
        suite_name=suite.name,
        suite_digest=suite.digest,
        resumed_uid=resumed_uid,
        device=str(device),
        seed=suite.seed,
        data=data.describe(),
        limit=limit,
        attacks={spec.id: attack_record(spec.name, dict(spec.params)) for spec in suite.attacks},
    )
    manifest["numerics"] = numerics.fingerprint(device)  # the gate's exact comparison needs equal kernels
    atomic_write_text(run.suite, dump_yaml(suite.resolved()))
    write_json(run.manifest, {**manifest, "status": "running"})
    return manifest


def run_cells(
    run: RunDir,
    suite: Suite,
    refs: dict[str, ModelRef],
    data: DataSplit,
    device: torch.device,
    *,
    jobs: int,
    backend: str,
    scheduler: str | None,
    echo: Callable[[str], None] | None,
    exact: bool = False,
    finished: dict[str, CellOutcome] | None = None,
) -> tuple[list[CellOutcome], WorkerPlan]:
    """Run the cells not yet done (joblib), with ``finished`` ones (read back and checked); outcomes in suite
    order, and the plan."""
    cells = expand(suite)
    finished = dict(finished or {})
    todo = [c for c in cells if c.id not in finished]

    def measure(workers: int) -> float:
        per_model = Counter(c.model.id for c in todo)
        models = {mid: (refs[mid].load(device), count) for mid, count in per_model.items()}
        x, y = data.x[: suite.batch_size].to(device), data.y[: suite.batch_size].to(device)
        return predicted_gain(models, x, y, workers)

    plan = choose_workers(backend, jobs, cells=len(todo), device=device, measure=measure, exact=exact)
    jobs, threads = plan.n_jobs, plan.threads
    if echo and plan.predicted_gain is not None:
        echo(f"--n-jobs {plan.requested}: {plan.reason}")
    tasks = [
        CellTask(
            cell,
            refs[cell.model.id],
            data,
            suite.name,
            suite.seed,
            str(device),
            suite.batch_size,
            suite.tracking.examples,
            str(run.root),
            threads,
        )
        for cell in cells
    ]
    to_run = {c.id for c in todo}
    pending = [t for t in tasks if t.cell.id in to_run]
    if echo:
        where = f"{backend}, n_jobs={jobs}" + (f", scheduler {scheduler}" if scheduler else "")
        echo(f"running {len(pending)} cell(s) of suite {suite.name!r} on {len(data)} samples ({device}, {where})")
    progress.cells(len(pending), {t.cell.id: min(t.cell.attack.n or len(data), len(data)) for t in pending})
    outcomes = run_tasks(run_cell, pending, jobs=jobs, backend=backend, scheduler=scheduler)
    outcomes.update(finished)
    return [outcomes[t.cell.id] for t in tasks], plan


def finished_cells(run: RunDir, suite: Suite, *, trust_edited: bool) -> tuple[dict[str, CellOutcome], list[str]]:
    """The cells a resumed run already finished, each checked (bench/runtrust.py), and the edits accepted."""
    finished: dict[str, CellOutcome] = {}
    edited: list[str] = []
    for cell in expand(suite):
        if run.cell_done(cell.id):
            finished[cell.id], note = load_cell(run, cell.id, trust_edited=trust_edited)
            if note:
                edited.append(note)
    return finished, edited
