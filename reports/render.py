"""Render a report of one or more runs: a self-contained ``report.html`` and a ``report.md``.

The HTML embeds every figure as a base64 PNG data URI and carries its own CSS
(no scripts, fonts or network). The Markdown (for pull-request comments) holds
the same tables and links the figures, written next to it as
``figures/<name>.png``.

With several runs, the first is the baseline: a comparison section puts each
candidate beside it (deltas, McNemar tests, overlaid curves), then every run
gets its own sections.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.rundir import atomic_write_text, cell_id
from reports import drawing, montage
from reports import figures as figs
from reports.bracket import bracket_fields
from reports.compare import compare_runs, differences, model_summary
from reports.flags import EXPLANATIONS, Flag, sanity_flags
from reports.sources import ReportError, RunData, load_run, unique_labels
from reports.tables import SummaryTable, choose_heatmap_eps, leaderboard, summary_tables
from reports.templating import environment
from reports.views import CROSSCHECK_VIEW, crosscheck_view, unbounded_rows
from reports.writer import FigureWriter, RenderedFigure

FOOLING = frozenset({"fooling_images"})
"""Attacks that synthesize images rather than perturb the data: shown as fooling grids."""


@dataclass
class CellExamples:
    cell: str
    model: str
    attack: str
    grid: RenderedFigure
    strip: RenderedFigure


@dataclass
class RunSection:
    index: int
    run: RunData
    tables: list[SummaryTable]
    flags: list[Flag]
    curves: list[RenderedFigure]
    heatmaps: list[RenderedFigure]
    examples: list[CellExamples]
    fooling: list[RenderedFigure]
    crosscheck: list[dict[str, Any]] | None
    crosscheck_columns: list[str]
    manifest: list[tuple[str, str]]
    versions: list[tuple[str, str]]
    models: list[dict[str, Any]]
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    reference_eps: dict[str, float] = field(default_factory=dict)
    headline: dict[str, str] = field(default_factory=dict)  # per norm: "worst case" or "reliable"
    unbounded: list[dict[str, Any]] = field(default_factory=list)
    bracket: list[dict[str, Any]] = field(default_factory=list)
    bracket_sentences: list[str] = field(default_factory=list)
    bands: list[RenderedFigure] = field(default_factory=list)


@dataclass
class ComparisonSection:
    baseline: str
    candidate: str
    rows: list[dict[str, Any]]
    paired: bool
    significant: int
    curves: list[RenderedFigure] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    banner: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    figures: Path


def render_report(
    runs: Sequence[RunData],
    out: Path,
    *,
    eps: float | None = None,
    title: str | None = None,
    alpha: float = 0.05,
    max_examples: int = 8,
    dpi: int = 100,
    drawn_curves: Mapping[str, bytes] | drawing.Pending[dict[str, bytes]] | None = None,
) -> ReportPaths:
    """Write ``out/report.html``, ``out/report.md`` and ``out/figures/*.png``.

    Args:
        runs: one or more runs; with several, the first is the baseline of the comparison.
        out: output folder (created).
        eps: the eps of the robust-accuracy heatmap, in pixel units; default per norm: the grid eps
            whose mean robust accuracy is closest to 0.5.
        title: report title (default from the suite names).
        alpha: significance level of the BH-adjusted McNemar q-values (default 0.05).
        max_examples: samples per adversarial example grid (default 8).
        dpi: PNG resolution (default 100).
        drawn_curves: the first run's per-attack curves already drawn at ``dpi`` by
            :func:`reports.figures.attack_curves` (``bench run`` draws them for ``figures/``), or being
            drawn (:mod:`reports.drawing`); used as they are instead of drawing them again.
    """
    runs = list(runs)
    if not runs:
        raise ReportError("no run to report: give run directories, --experiment or --runs")
    unique_labels(runs)
    if eps is not None and not any(
        np.isclose(r.results["eps"].astype(float), eps, rtol=0, atol=1e-12).any() for r in runs
    ):
        grid = sorted({float(e) for r in runs for e in r.results["eps"]})
        raise ReportError(f"--eps: {eps:g} is on no run's epsilon grid (allowed: {', '.join(f'{e:g}' for e in grid)})")
    out.mkdir(parents=True, exist_ok=True)
    with FigureWriter(out, dpi) as writer:
        sections = [
            _run_section(i, run, writer, eps=eps, max_examples=max_examples, drawn=drawn_curves if i == 1 else None)
            for i, run in enumerate(runs, 1)
        ]
        comparisons = [_comparison(runs[0], cand, writer, alpha=alpha) for cand in runs[1:]]
    context = {
        "title": title or _default_title(runs),
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sections": sections,
        "comparisons": comparisons,
        "alpha": alpha,
        "inf": math.inf,
        "explanations": EXPLANATIONS,
        "n_flags": sum(len(s.flags) for s in sections),
        "edited": [f"{run.label}: {run.edited}" for run in runs if run.edited],
    }
    env = environment()
    html = out / "report.html"
    markdown = out / "report.md"
    atomic_write_text(html, env.get_template("report.html.j2").render(**context))
    atomic_write_text(markdown, env.get_template("report.md.j2").render(**context))
    return ReportPaths(html, markdown, writer.dir)


def render_run_dir(run_dir: Path, out: Path | None = None, **options: Any) -> ReportPaths:
    """Report of one run directory, by default into ``<run_dir>/report/`` (what ``bench run`` does)."""
    run = load_run(run_dir)
    return render_report([run], out if out is not None else Path(run_dir) / "report", **options)


def _default_title(runs: Sequence[RunData]) -> str:
    suites = list(dict.fromkeys(str(r.manifest.get("suite", "?")) for r in runs))
    kind = "comparison" if len(runs) > 1 else "report"
    return f"Robustness {kind}: {', '.join(suites)}"


# -- one run ----------------------------------------------------------------------------------


def _run_section(
    index: int,
    run: RunData,
    writer: FigureWriter,
    *,
    eps: float | None,
    max_examples: int,
    drawn: Mapping[str, bytes] | drawing.Pending[dict[str, bytes]] | None = None,
) -> RunSection:
    results = run.results
    prefix = f"r{index}"
    # the montages first, on the writer's thread, while the figures and tables below are made here
    pending = _submit_montages(prefix, run, writer, max_examples=max_examples)
    # the curves and heatmaps on the drawing process when one runs (reports.drawing), else here
    if drawn is None:
        drawn = drawing.submit(figs.attack_curves, results, dpi=writer.dpi)
    heatmaps_drawn = []
    for norm, part in results.groupby("norm", sort=False):
        if norm == "none":
            continue
        at = choose_heatmap_eps(results, str(norm), eps)
        grid = (
            part[part["eps"] == at]
            .pivot_table(index="model", columns="attack", values="robust_accuracy", sort=False)
            .reindex(index=list(dict.fromkeys(part["model"])))
        )
        title = f"robust accuracy at {norm} eps {at:g}"
        heatmaps_drawn.append((norm, at, drawing.submit(figs.heatmap_png, grid, title=title, dpi=writer.dpi)))
    crosscheck = None if run.crosscheck is None else crosscheck_view(run.crosscheck)
    board = leaderboard(results, run.samples)
    tables = summary_tables(results, run.samples)
    flags = sanity_flags(results, models=run.models, crosscheck=run.crosscheck, attacks=run.manifest.get("attacks"))
    pngs = drawn.result() if isinstance(drawn, drawing.Pending) else drawn
    curves = []
    for attack, rows in results[results["norm"] != "none"].groupby("attack", sort=False):
        name, caption = (
            f"{prefix}-curve-{attack}",
            f"{attack}: robust accuracy against eps, models overlaid, 95% Wilson bands",
        )
        png = pngs.get(str(attack))
        if png is None:  # not among the curves handed in
            png = figs.figure_png(
                figs.curve_figure(rows, hue="model", title=figs.curve_title(str(attack), rows)), dpi=writer.dpi
            )
        curves.append(writer.add_png(png, name, caption))
    heatmaps = [
        writer.add_png(
            png.result(), f"{prefix}-heatmap-{norm}", f"robust accuracy, model x attack, {norm} eps = {at:g}"
        )
        for norm, at, png in heatmaps_drawn
    ]
    examples = [
        CellExamples(cell, model, attack, grid.result(), strip.result())
        for cell, model, attack, grid, strip in pending.examples
    ]
    fooling = [figure.result() for figure in pending.fooling]
    return RunSection(
        index=index,
        run=run,
        tables=tables,
        flags=flags,
        curves=curves,
        heatmaps=heatmaps,
        examples=examples,
        fooling=fooling,
        crosscheck=crosscheck,
        crosscheck_columns=CROSSCHECK_VIEW,
        manifest=_manifest_items(run),
        versions=sorted((str(k), str(v)) for k, v in (run.manifest.get("versions") or {}).items()),
        models=_model_rows(run),
        leaderboard=board.to_dict("records"),
        reference_eps=dict(board.attrs.get("reference_eps", {})),
        headline=dict(board.attrs.get("headline", {})),
        unbounded=unbounded_rows(results),
        **bracket_fields(prefix, run.certified, writer),
    )


@dataclass
class _Montages:
    examples: list[tuple[str, str, str, Future[RenderedFigure], Future[RenderedFigure]]] = field(default_factory=list)
    fooling: list[Future[RenderedFigure]] = field(default_factory=list)


def _submit_montages(prefix: str, run: RunData, writer: FigureWriter, *, max_examples: int) -> _Montages:
    """Every cell's example grid and first-image strip (fooling grid for synthesis attacks), submitted to ``writer``."""
    pending = _Montages()
    for (model, attack), rows in run.results.groupby(["model", "attack"], sort=False):
        cell = cell_id(model, attack)
        found = run.examples.get(cell)
        if found is None or found["x_adv"].shape[1] == 0:
            continue
        if rows["attack_name"].iloc[0] in FOOLING:
            targets = _example_targets(run, str(model), str(attack), found)
            pending.fooling.append(
                writer.submit(
                    partial(montage.fooling_grid, found, targets, max_samples=max_examples),
                    f"{prefix}-fooling-{cell}",
                    f"{model} / {attack}: synthesized images (red: the model sees the target class)",
                )
            )
            continue
        grid = writer.submit(
            partial(montage.example_grid, found, max_samples=max_examples),
            f"{prefix}-examples-{cell}",
            f"{model} / {attack}: rows eps, columns samples; label→prediction, green still correct, red fooled",
        )
        strip = writer.submit(
            partial(montage.first_image_strip, found),
            f"{prefix}-first-{cell}",
            f"{model} / {attack}: the first image at each eps and its perturbation",
        )
        pending.examples.append((cell, str(model), str(attack), grid, strip))
    return pending


def _example_targets(run: RunData, model: str, attack: str, examples: dict[str, np.ndarray]) -> np.ndarray | None:
    """Targets of the example samples (the first k of the split), from the per-sample flags."""
    if run.samples is None:
        return None
    mine = run.samples[(run.samples["model"] == model) & (run.samples["attack"] == attack)]
    if mine.empty:
        return None
    last = mine[mine["eps"] == mine["eps"].max()]
    return last["target"].to_numpy()[: len(examples["y"])]


def _manifest_items(run: RunData) -> list[tuple[str, str]]:
    m, data = run.manifest, run.manifest.get("data") or {}
    items = [
        ("run", run.label),
        ("source", f"MLflow run {run.mlflow_run_id}" if run.mlflow_run_id else str(run.root)),
        ("suite", f"{m.get('suite')} (digest {m.get('suite_digest')})"),
        ("git commit", str(m.get("git_commit") or "unknown")),
        ("data", f"{data.get('name')} / {data.get('split')}, n = {data.get('n')}, shape {data.get('input_shape')}"),
        ("data digest", str(data.get("digest"))),
        ("data source", str(data.get("source"))),
        ("seed", str(m.get("seed"))),
        ("device", str(m.get("device"))),
        ("platform", str(m.get("platform"))),
        ("started", str(m.get("started"))),
        ("finished", str(m.get("finished"))),
        ("wall time", _seconds(m.get("wall_seconds"))),
        ("model preparation", _seconds(m.get("prepare_seconds"))),
        ("attack time", _seconds(m.get("attack_seconds"))),
    ]
    if m.get("limit"):
        items.append(("limit", str(m["limit"])))
    return items


def _model_rows(run: RunData) -> list[dict[str, Any]]:
    rows = []
    for name, info in run.models.items():
        zero = info.get("zero_gradient_fraction")
        rows.append(
            {
                "model": name,
                "architecture": info.get("name", name),
                "parameters": info.get("parameters"),
                "clean_accuracy": info.get("clean_accuracy"),
                "zero_gradient_fraction": "n/a" if zero is None else f"{zero:.1%}",
                "cache_key": info.get("cache_key", ""),
                **_weights_cells(info),
                "warnings": "; ".join(info.get("output_warnings") or []) or "none",
            }
        )
    return rows


def _weights_cells(info: dict[str, Any]) -> dict[str, str]:
    """The model table's weights: reference / RETRAINED / external with the digest's first 12 hex digits."""
    kind = str(info.get("weights") or "unknown")
    digest = str(info.get("weights_sha256") or "")
    label = {"retrained": "RETRAINED"}.get(kind, kind)
    return {
        "weights": f"{label} {digest[:12]}".strip(),
        "weights_sha256": digest,
        "weights_note": str(info.get("weights_note") or ""),
    }


def _seconds(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.1f} s"


# -- comparison -------------------------------------------------------------------------------


def _comparison(baseline: RunData, candidate: RunData, writer: FigureWriter, *, alpha: float) -> ComparisonSection:
    table = compare_runs(baseline, candidate, alpha=alpha)
    if table.empty:
        raise ReportError(
            f"runs {baseline.label!r} and {candidate.label!r} share no (model, attack, eps) cell to compare"
        )
    both = pd.concat(
        [baseline.results.assign(run=baseline.label), candidate.results.assign(run=candidate.label)],
        ignore_index=True,
    )
    shared = set(table["attack"]) - set(both.loc[both["norm"] == "none", "attack"])
    curves = [
        writer.add(
            figs.curve_figure(rows, hue="model", style="run", title=f"{attack}: baseline vs candidate"),
            f"compare-{candidate.label}-{attack}",
            f"{attack}: {baseline.label} (baseline) and {candidate.label}, per model",
        )
        for attack, rows in both[both["attack"].isin(shared)].groupby("attack", sort=False)
    ]
    return ComparisonSection(
        baseline=baseline.label,
        candidate=candidate.label,
        rows=table.to_dict("records"),
        paired=bool(table["paired"].any()),
        significant=int(table["significant"].sum()),
        curves=curves,
        summary=model_summary(baseline, candidate, alpha=alpha),
        banner=differences(baseline, candidate),
    )
