"""The performance page's tables, read from a ``bench perf --json`` file (never retyped)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import limits
from bench.docgen.markdown import table


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else str(value)


def read_perf(path: Path) -> dict[str, Any]:
    """A ``bench perf`` JSON file, checked to be one (a clear error names the file otherwise)."""
    if path.stat().st_size > limits.RUN_JSON_BYTES:
        raise ValueError(f"{path}: larger than {limits.RUN_JSON_BYTES} bytes")
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != "bench-perf":
        raise ValueError(f"{path}: not a bench perf JSON file (format: bench-perf)")
    return doc


def targets_table(doc: dict[str, Any]) -> str:
    rows = []
    for t in doc.get("targets", []):
        measured = t.get("measured")
        verdict = "pass" if t.get("passed") else ("**FAIL**" if t.get("passed") is False else "not measured")
        row = [t.get("id", ""), t.get("model", "") or "", t.get("what", ""), t.get("target", ""), _num(measured)]
        rows.append([*row, verdict])
    return table(["target", "model", "what", "bound", "measured (median)", "verdict"], rows)


def workload_table(doc: dict[str, Any]) -> str:
    rows = []
    for model, w in (doc.get("workload") or {}).items():
        times, attack = w["times"], w.get("attack_seconds", {})

        def way(name: str, times: dict = times, attack: dict = attack) -> str:
            parts = attack.get(name, {})
            inner = ", ".join(f"{v:.1f}" for v in parts.values())
            return f"{times[name]:.1f} ({inner})" if inner else f"{times[name]:.1f}"

        rows.append(
            [
                f"`{model}`",
                w["n"],
                way("harness"),
                way("art_loop"),
                way("plain_loop"),
                _num(times["art_loop"] / times["harness"], 2),
                _num(times["plain_loop"] / times["harness"], 2),
                "yes" if w.get("harness_not_weaker", True) else "no",
            ]
        )
    return table(
        [
            "model",
            "inputs",
            "harness s (FGSM, PGD)",
            "ART loop s",
            "plain loop s",
            "ART / harness",
            "plain / harness",
            "harness not weaker",
        ],
        rows,
    )


def micro_table(doc: dict[str, Any]) -> str:
    rows = []
    for model, m in (doc.get("models") or {}).items():
        for what, value in m.get("ratios", {}).items():
            rows.append([f"`{model}`", f"`{what}`", _num(value), _num(m.get("best_ratios", {}).get(what))])
    return table(["model", "ratio", "median", "fastest"], rows)


def scaling_table(doc: dict[str, Any]) -> str:
    points = (doc.get("scaling") or {}).get("points", [])
    rows = [
        [
            f"{p['n']:,}",
            _num(p["wall_seconds"], 1),
            _num(p["seconds_per_sample"] * 1000, 2),
            _num(p["attack_seconds"], 2),
            _num(p["attack_seconds_per_sample"] * 1000, 2),
            f"{p['peak_rss_bytes'] / 2**30:.2f} GiB",
        ]
        for p in points
    ]
    return table(["n", "wall s", "ms per sample", "s in attacks", "ms per sample in attacks", "peak memory"], rows)


def parallel_table(doc: dict[str, Any]) -> str:
    rows = []
    for s in (doc.get("parallel") or {}).get("suites", []):
        workers = s.get("workers") or {}
        rows.append(
            [
                f"`{Path(s['suite']).stem}`",
                s["cells"],
                _num(s["serial_seconds"], 1),
                _num(s["parallel_seconds"], 1),
                _num(s["speedup"], 2) + "x",
                workers.get("reason", ""),
                "identical" if s.get("identical_results") else "DIFFER",
            ]
        )
    return table(
        [
            "suite",
            "cells",
            "serial s",
            f"--n-jobs {(doc.get('parallel') or {}).get('n_jobs', '')} s",
            "speed-up",
            "plan",
            "results",
        ],
        rows,
    )


def harness_table(doc: dict[str, Any]) -> str:
    h = doc.get("harness") or {}
    keys = (
        "wall_seconds",
        "attack_seconds",
        "clean_seconds",
        "prepare_seconds",
        "report_seconds",
        "figures_seconds",
        "overhead_seconds",
        "overhead_fraction",
    )
    rows = [[f"`{k}`", _num(h[k])] for k in keys if k in h]
    return table(["field", "value"], rows)


def perf_reference(path: Path) -> str:
    """Every table of one ``bench perf`` JSON file, each under its own heading."""
    doc = read_perf(path)
    env = doc.get("environment", {})
    cfg = doc.get("config", {})
    head = (
        f"From `{path.name}` (started {doc.get('started', '?')}; {env.get('cpu_count', '?')} cores, "
        f"{env.get('torch_threads', '?')} torch threads, device {env.get('device', '?')}, torch "
        f"{env.get('versions', {}).get('torch', '?')}; {cfg.get('n', '?')} inputs of `{cfg.get('data', '?')}`, "
        f"batch {cfg.get('batch_size', '?')}, {cfg.get('repeats', '?')} repeats).\n"
    )
    sections = [
        ("Targets", "targets", targets_table),
        ("The user's workload (P5): FGSM + PGD over the grid, three ways", "workload", workload_table),
        ("Bounds and single attacks (P1-P3): ratios", "models", micro_table),
        ("Harness overhead (P4)", "harness", harness_table),
        ("Scaling", "scaling", scaling_table),
        ("Parallel cells (P6)", "parallel", parallel_table),
        ("Certifiers (`--certify`)", "certify", certify_table),
    ]
    parts = [head]
    for title, key, build in sections:
        if not doc.get(key):  # not measured by this run (an option left out)
            continue
        parts.append(f"#### {title}\n")
        parts.append(build(doc))
    return "\n".join(parts)


def certify_table(doc: dict[str, Any]) -> str:
    """The certifiers' times and counts (``bench perf --certify``), ART's DeepZ among them."""
    c = doc["certify"]
    rows = [[f"`{k}`", c["n"], _num(v), c["certified"].get(k, "")] for k, v in c["times"].items()]
    art = c["art"]
    rows.append(["`crown` (whole ball, as DeepZ)", art["n"], _num(art["crown_seconds"]), art["crown_certified"]])
    rows.append(["ART `PytorchDeepZ`", art["n"], _num(art["deepz_seconds"]), art["deepz_certified"]])
    sm = c["smoothing"]
    for key, seconds in sm["times"].items():
        rows.append([f"`{key}` ({sm['n0'] + sm['draws']} draws each)", sm["n"], _num(seconds), ""])
    head = table([f"{c['model']}, Linf eps {c['eps']:g}", "inputs", "seconds (median)", "certified"], rows)
    ratios = table(["ratio", "measured"], [[k, _num(v, 2) + "x"] for k, v in c["ratios"].items()])
    return head + "\n" + ratios
