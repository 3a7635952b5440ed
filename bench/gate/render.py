"""The gate's report for people and CI: a Markdown summary (pull-request comment) and JUnit XML.

Both show each model's weights (kind, sha256 prefix, same as the baseline's or
not) and, where results had to be identical, the ids of the samples that flipped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from bench.gate.compare import CheckReport
from bench.gate.exact import DIGEST_SHOWN


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}"


def _p(value: float | None) -> str:
    return "" if value is None else f"{value:.2g}"


ICONS = {"ok": "✅", "improved": "⬆️", "regressed": "❌", "below floor": "❌", "changed": "❌", "new": "🆕"}


def weights_lines(report: CheckReport) -> list[str]:
    """One line per model: ``lenet: same (reference 0123456789ab)``, ``mlp: differ (run ..., baseline ...)``."""
    return [f"{w.model}: {w.summary}" for w in report.weights]


def _digest(sha256: str) -> str:
    return f"`{sha256[:DIGEST_SHOWN]}`" if sha256 else ""


def _weights_table(report: CheckReport) -> list[str]:
    """The models' weights as a Markdown table (kind and sha256 prefix, run and baseline), then a blank line."""
    if not report.weights:
        return []
    lines = [
        "| model | weights | sha256 | baseline weights | baseline sha256 | vs baseline |",
        "|---|---|---|---|---|---|",
    ]
    for w in report.weights:
        base = w.baseline
        verdict = {"same": "same weights", "differ": "weights differ (includes training variance)"}.get(
            w.status, "unknown (compared statistically)" if base is not None else "no baseline"
        )
        lines.append(
            f"| {w.model} | {w.current.weights} | {_digest(w.current.sha256)} | "
            f"{base.weights if base else ''} | {_digest(base.sha256 if base else '')} | {verdict} |"
        )
    return [*lines, ""]


def markdown(report: CheckReport) -> str:
    """A Markdown summary for a pull-request comment: verdict, notes, then one table row per item."""
    s = report.settings
    lines = [
        f"## bench check: {report.suite}: {'✅' if report.passed else '❌'} {report.verdict}",
        "",
        f"{len(report.items)} checked items; {report.count('regressed')} regressed, "
        f"{report.count('below floor')} below floor, {report.count('changed')} changed, "
        f"{report.count('improved')} improved, {report.count('new')} new.",
        f"Baseline: {report.baseline_source or 'none (floors only)'}; "
        f"tests: {'paired (same samples)' if report.paired else 'unpaired'}, one-sided, alpha {s.alpha:g}"
        f"{', Holm-corrected' if s.correction == 'holm' else ''}; default tolerances: "
        f"cell drop {s.max_drop:g}, AUC drop {s.max_auc_drop:g}.",
        "",
    ]
    lines += [f"> {note}" for note in report.notes]
    if report.notes:
        lines.append("")
    lines += _weights_table(report)
    lines += [
        "| | model | attack | point | baseline | current | change | tolerance | p (adj.) | test | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"regressed": 0, "below floor": 0, "changed": 0, "improved": 1}
    for item in sorted(report.items, key=lambda it: order.get(it.status, 2)):
        lines.append(
            f"| {ICONS[item.status]} | {item.model} | {item.attack} | {item.name} | {_fmt(item.baseline)} | "
            f"{_fmt(item.current)} | {_signed(item.change)} | {_fmt(item.tolerance, 2)} | "
            f"{_p(item.p_drop_adjusted)} | {item.test} | {item.note} |"
        )
    return "\n".join(lines) + "\n"


def junit_xml(report: CheckReport) -> ET.ElementTree:
    """JUnit XML: one ``testcase`` per checked item (class ``<suite>.<model>.<attack>``, name ``eps=...``/``auc``)."""
    root = ET.Element("testsuites", name="bench check")
    suite = ET.SubElement(
        root,
        "testsuite",
        name=f"bench check {report.suite}",
        tests=str(len(report.items)),
        failures=str(sum(item.failed for item in report.items)),
        errors="0",
        skipped="0",
    )
    if report.weights:
        properties = ET.SubElement(suite, "properties")
        for w in report.weights:
            ET.SubElement(properties, "property", name=f"weights.{w.model}", value=w.summary)
    for item in report.items:
        case = ET.SubElement(suite, "testcase", classname=f"{report.suite}.{item.model}.{item.attack}", name=item.name)
        summary = (
            f"{item.model}/{item.attack} {item.name}: current {_fmt(item.current)}, baseline {_fmt(item.baseline)}, "
            f"change {_signed(item.change) or 'n/a'}, tolerance {_fmt(item.tolerance, 2) or 'n/a'}, "
            f"p (adjusted) {_p(item.p_drop_adjusted) or 'n/a'}, test {item.test or 'none'}"
            + (f" ({item.detail})" if item.detail else "")
        )
        if item.failed:
            failure = ET.SubElement(case, "failure", message=f"{item.status}: {item.note}", type=item.status)
            failure.text = summary
        ET.SubElement(case, "system-out").text = summary + (f"; {item.note}" if item.note else "")
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(report: CheckReport, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_xml(report).write(path, encoding="utf-8", xml_declaration=True)
