"""The report templates' compiled-template cache: reused across processes, never a reason for a report to fail."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import jinja2
import pytest

from reports.templating import TEMPLATES, TemplateCache, environment, settings_key, template_cache

NAMES = ("report.html.j2", "report.md.j2")


def _counting_compiles(env: jinja2.Environment) -> list[str]:
    """Names of the templates ``env`` compiles from source from now on (a spy on the real compiler)."""
    compiled: list[str] = []
    original = env.compile

    def compile_and_count(source: str, name: str | None = None, *args: object, **kwargs: object) -> object:
        compiled.append(str(name))
        return original(source, name, *args, **kwargs)

    env.compile = compile_and_count  # type: ignore[method-assign]
    return compiled


def _code(env: jinja2.Environment, name: str) -> bytes:
    return env.get_template(name).root_render_func.__code__.co_code


def test_a_second_environment_loads_the_compiled_templates_instead_of_compiling(tmp_path: Path) -> None:
    first = environment(cache=template_cache(tmp_path))
    compiled = _counting_compiles(first)
    fresh = [_code(first, name) for name in NAMES]
    assert sorted(compiled) == sorted(NAMES)
    assert len(list(tmp_path.glob(f"__bench_report_{settings_key()}_*.cache"))) == len(NAMES)

    second = environment(cache=template_cache(tmp_path))
    compiled = _counting_compiles(second)
    assert [_code(second, name) for name in NAMES] == fresh
    assert compiled == []


def test_an_edited_template_is_compiled_again(tmp_path: Path) -> None:
    cache = template_cache(tmp_path / "cache")
    assert cache is not None
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "t.j2").write_text("one {{ x }}")
    env = environment(cache=cache)
    env.loader = jinja2.FileSystemLoader(templates)
    assert env.get_template("t.j2").render(x=1) == "one 1"
    (templates / "t.j2").write_text("two {{ x }}")
    env = environment(cache=cache)
    env.loader = jinja2.FileSystemLoader(templates)
    assert env.get_template("t.j2").render(x=1) == "two 1"


def test_a_broken_cache_entry_is_compiled_again_and_replaced(tmp_path: Path) -> None:
    environment(cache=template_cache(tmp_path)).get_template(NAMES[0])
    (entry,) = tmp_path.glob("__bench_report_*.cache")
    good = entry.read_bytes()
    # cut inside the pickled checksum after jinja2's header: jinja2 alone raises UnpicklingError there
    header = len(jinja2.bccache.bc_magic)
    for broken in (good[: header + 1], good[: header + 10], b"", good[: len(good) // 2], b"\x00" * 64):
        entry.write_bytes(broken)
        env = environment(cache=template_cache(tmp_path))
        compiled = _counting_compiles(env)
        assert "<html" in env.get_template(NAMES[0]).render(**_empty_report())
        assert compiled == [NAMES[0]]
        assert entry.read_bytes() == good


def test_a_cache_folder_that_cannot_be_written_only_costs_the_compilation(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    assert template_cache(blocked) is None  # not a folder: no cache, the default's or none
    env = environment(cache=TemplateCache(str(blocked)))  # a folder that went away after it was chosen
    compiled = _counting_compiles(env)
    assert "<html" in env.get_template(NAMES[0]).render(**_empty_report())
    assert compiled == [NAMES[0]]
    assert blocked.read_text() == "a file where the cache folder should be"


def test_the_default_cache_is_jinjas_private_per_user_folder() -> None:
    cache = template_cache()
    assert cache is not None
    info = os.lstat(cache.directory)
    assert stat.S_ISDIR(info.st_mode) and not stat.S_ISLNK(info.st_mode)
    assert info.st_uid == os.getuid()
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert Path(cache.directory).resolve() != TEMPLATES.resolve()
    assert isinstance(environment().bytecode_cache, jinja2.FileSystemBytecodeCache)


def _empty_report() -> dict[str, object]:
    """The context of a report with no run section (what the HTML template needs to render)."""
    return {
        "title": "t",
        "generated": "now",
        "sections": [],
        "comparisons": [],
        "alpha": 0.05,
        "inf": float("inf"),
        "explanations": {},
        "n_flags": 0,
        "edited": [],
    }


def test_entries_compiled_under_other_settings_are_not_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """jinja2 keys an entry by the template's name and text only: a changed option must not load old code."""
    import reports.templating as templating

    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "t.html.j2").write_text("{% if x %}\n<p>{{ x }}</p>\n{% endif %}\n")

    def render() -> tuple[str, list[str]]:
        env = environment(cache=template_cache(tmp_path / "cache"))
        env.loader = jinja2.FileSystemLoader(templates)
        compiled = _counting_compiles(env)
        return env.get_template("t.html.j2").render(x="<b>"), compiled

    assert render() == ("<p>&lt;b&gt;</p>\n", ["t.html.j2"])
    assert render() == ("<p>&lt;b&gt;</p>\n", [])  # loaded from the cache
    monkeypatch.setitem(templating.SETTINGS, "trim_blocks", False)
    assert render() == ("\n<p>&lt;b&gt;</p>\n", ["t.html.j2"])  # compiled anew under the new option
    monkeypatch.setattr(templating, "AUTOESCAPED", ())
    assert render() == ("\n<p><b></p>\n", ["t.html.j2"])
    assert len(list((tmp_path / "cache").glob("__bench_report_*.cache"))) == 3
