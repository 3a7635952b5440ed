"""The documentation site builds strictly, its generated reference covers the code, the README stays short."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench import limits
from bench.attacks import ATTACKS
from bench.certify import CERTIFIERS
from bench.cli.catalog import build as build_catalog
from bench.data import DATASETS
from bench.docgen import DocgenError, expand
from bench.docgen.limits_ref import WHERE
from bench.suite.schema import Suite
from model_zoo import MODELS, reference
from tests.docblocks import blocks

REPO = Path(__file__).resolve().parent.parent
README_LINES = 300


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent), "HOME": str(out)},
    )
    assert done.returncode == 0, done.stderr[-5000:]
    return out


def _text(site: Path, page: str) -> str:
    html = (site / page / "index.html").read_text(encoding="utf-8")
    return re.sub(r"<[^>]+>", " ", html)


def test_every_page_is_built_and_linked(site: Path) -> None:
    pages = sorted(p.stem for p in (REPO / "docs").glob("*.md"))
    for page in pages:
        built = site / "index.html" if page == "index" else site / page / "index.html"
        assert built.is_file(), page
    nav = (REPO / "mkdocs.yml").read_text()
    assert all(f"{page}.md" in nav for page in pages)


def test_the_attack_reference_lists_every_attack_and_parameter(site: Path) -> None:
    text = _text(site, "attacks")
    catalog = build_catalog()["attacks"]
    for name in ATTACKS.names():
        assert f'id="{name}"' in (site / "attacks" / "index.html").read_text(), name
        for param in catalog[name]["params"]:
            if param == "bpda" and not ATTACKS.get(name).uses_gradients:
                continue
            assert param in text, (name, param)


def test_the_suite_reference_lists_every_field(site: Path) -> None:
    text = _text(site, "suites")
    schema = Suite.model_json_schema()
    for field in schema["properties"]:
        assert f"{field}" in text, field
    for spec, prefix in (
        ("DatasetSpec", "dataset."),
        ("ModelSpec", "models[]."),
        ("AttackSpec", "attacks[]."),
        ("TrackingSpec", "tracking."),
    ):
        for field, prop in schema["$defs"][spec]["properties"].items():
            assert f"{prefix}{field}" in text, (spec, field)
            assert prop.get("description"), f"{spec}.{field} has no docstring: the reference would say nothing"
    for field, prop in schema["properties"].items():
        assert prop.get("description"), f"Suite.{field} has no docstring"


def test_the_cli_data_and_zoo_references_cover_the_registries(site: Path) -> None:
    cli = _text(site, "cli")
    for command in (
        "run",
        "validate",
        "report",
        "check",
        "baseline",
        "sync",
        "crosscheck",
        "perf",
        "zoo list",
        "zoo import",
    ):
        assert f"bench {command}" in cli, command
    assert "--max-drop" in cli and "--trust" in cli
    data = _text(site, "data")
    assert all(name in data for name in DATASETS.names())
    models = _text(site, "models")
    assert all(name in models for name in MODELS.names())
    assert all(entry.sha256[:12] in models for entry in reference.entries())


def test_the_performance_tables_come_from_the_json(site: Path) -> None:
    text = _text(site, "performance")
    assert "art_loop / harness" in text and "peak memory" in text
    assert (site / "img" / "generated" / "perf_scaling.png").stat().st_size > 10_000


def test_the_api_reference_comes_from_the_docstrings(site: Path) -> None:
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert 'id="bench.api.evaluate"' in html and "EvaluateError" in html


def test_a_bad_marker_is_a_clear_error() -> None:
    with pytest.raises(DocgenError, match=r"docs/x.md: unknown generator 'atacks' \(allowed: attacks"):
        expand("<!-- bench:generate atacks -->\n", page="docs/x.md", root=REPO)


def test_the_readme_fits_on_a_few_screens() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_LINES
    for heading in (
        "## Set-up",
        "## Quickstart",
        "## Evaluate your own model",
        "## Defended models",
        "## Where to go next",
        "## Contributing",
    ):
        assert heading in readme, heading
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / link).is_file(), link


def test_the_annotated_suite_example_names_every_top_level_field() -> None:
    """The hand-annotated example at the top of docs/suites.md has every field of the schema, and no other."""
    (example,) = [b for b in blocks(REPO / "docs" / "suites.md") if b.language == "yaml" and "checks:" in b.code]
    keys = set(yaml.safe_load(example.code))
    assert keys == set(Suite.model_json_schema()["properties"]) | {"include"}


def test_the_security_page_lists_every_cap(site: Path) -> None:
    assert set(WHERE) == set(limits.WORK_CAPS), "say where each cap of bench/limits.py applies"
    text = _text(site, "security")
    for field, cap in limits.WORK_CAPS.items():
        assert field in text and f"{cap:,}" in text, field


def test_the_certifier_reference_lists_every_certifier(site: Path) -> None:
    html = (site / "certify" / "index.html").read_text(encoding="utf-8")
    for name in CERTIFIERS.names():
        assert f'id="{name}"' in html, name
    assert "intermediate" in html and "sigma" in html
