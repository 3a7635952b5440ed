from __future__ import annotations

from pathlib import Path

import pytest

from bench.suite import SuiteError, expand, load_suite

BASE = """
name: tiny
dataset: {name: digits, split: test, n: 64}
models: [mlp]
attacks: [fgsm]
epsilons: [0, 0.1]
"""


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_quickstart_is_valid_and_expands_to_three_cells() -> None:
    suite = load_suite(Path(__file__).parent.parent / "suites" / "quickstart.yaml")
    cells = expand(suite)
    assert [c.id for c in cells] == ["mlp__fgsm", "lenet__fgsm", "cnn__fgsm"]
    assert suite.epsilons == [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    assert suite.dataset.name == "mnist5k" and suite.seed == 0


def test_shorthand_fractions_sorting_and_overrides(tmp_path: Path) -> None:
    suite = load_suite(
        write(
            tmp_path,
            BASE.replace("epsilons: [0, 0.1]", 'epsilons: ["8/255", 0, 0.1, 0.1]') + "\n",
        )
    )
    assert suite.epsilons == pytest.approx([0, 8 / 255, 0.1])
    assert suite.models[0].name == "mlp" and suite.attacks[0].params == {}


def test_include_merges_and_this_file_wins(tmp_path: Path) -> None:
    write(tmp_path, BASE, "base.yaml")
    child = write(tmp_path, "include: base.yaml\nname: child\nseed: 7\ndataset: {n: 32}\n", "child.yaml")
    suite = load_suite(child)
    assert suite.name == "child" and suite.seed == 7
    assert suite.dataset.n == 32 and suite.dataset.name == "digits"  # nested mapping merged key by key
    assert suite.models[0].name == "mlp"


def test_include_cycle_and_missing_include(tmp_path: Path) -> None:
    write(tmp_path, "include: b.yaml\nname: a\n", "a.yaml")
    write(tmp_path, "include: a.yaml\nname: b\n", "b.yaml")
    with pytest.raises(SuiteError, match="include cycle"):
        load_suite(tmp_path / "a.yaml")
    with pytest.raises(SuiteError, match=r"include: file 'nope.yaml' not found"):
        load_suite(write(tmp_path, "include: nope.yaml\n" + BASE, "c.yaml"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("attacks: [fgsm]", "attacks: [fgms]"), r"attacks\[0\]\.name: unknown attack 'fgms'; did you mean 'fgsm'"),
        (("models: [mlp]", "models: [lenett]"), r"models\[0\]\.name: unknown model 'lenett'; did you mean 'lenet'"),
        (("name: digits", "name: digitz"), r"dataset\.name: unknown data set 'digitz'; did you mean 'digits'"),
        (
            ("attacks: [fgsm]", "attacks: [{name: fgsm, params: {steps: 3}}]"),
            r"attacks\[0\]\.params: attack 'fgsm' has no parameter 'steps' "
            r"\(allowed: bpda, norm, target_mode, targeted\)",
        ),
        (
            ("attacks: [fgsm]", "attacks: [{name: fgsm, params: {norm: l7}}]"),
            r"attacks\[0\]\.params: unknown norm 'l7' \(allowed: linf, l2\)",
        ),
        (("epsilons: [0, 0.1]", "epsilons: []"), r"epsilons: the epsilon list is empty"),
        (("epsilons: [0, 0.1]", "epsilons: [0, -0.1]"), r"epsilons\[1\]: epsilon must be >= 0"),
        (("epsilons: [0, 0.1]", "epsilons: [0, .nan]"), r"epsilons\[1\]: epsilon must be finite"),
        (
            ("epsilons: [0, 0.1]", "epsilons: [0, '3/x']"),
            r"epsilons\[1\]: epsilon '3/x' is neither a number nor a fraction",
        ),
        (("n: 64", "n: -3"), r"dataset\.n: Input should be greater than 0"),
        (("n: 64", "n: many"), r"dataset\.n: expected an integer, got str 'many'"),
        (("split: test", "split: val"), r"dataset\.split: allowed values are 'train' or 'test'"),
        (("name: tiny", "name: tiny\ncolour: blue"), r"colour: unknown field"),
        (("name: tiny", "name: ../escape"), r"name: suite name '../escape' may contain only"),
        (("models: [mlp]", "models: [mlp, mlp]"), r"models: 'mlp' appears twice"),
        (
            ("models: [mlp]", "models: [{name: mlp, recipe: {epochz: 1}}]"),
            r"models\[0\]\.recipe: unknown recipe field\(s\) epochz",
        ),
        (("models: [mlp]", "models: []"), r"models: List should have at least 1 item"),
    ],
)
def test_errors_name_file_field_and_allowed_values(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = write(tmp_path, BASE.replace(*change))
    with pytest.raises(SuiteError, match=message) as info:
        load_suite(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed\n", r"invalid YAML at line \d+, column \d+"),
        ("", "the suite file is empty"),
        ("- a\n- b\n", "a suite must be a mapping"),
        ("!!python/object/apply:os.system ['echo pwned']\n", "invalid YAML"),  # safe_load refuses tags
    ],
)
def test_unreadable_suites(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SuiteError, match=message):
        load_suite(write(tmp_path, text))


def test_missing_file() -> None:
    with pytest.raises(SuiteError, match="suite file not found"):
        load_suite("does/not/exist.yaml")


def test_digest_is_stable_and_tracks_content(tmp_path: Path) -> None:
    a = load_suite(write(tmp_path, BASE, "a.yaml"))
    b = load_suite(write(tmp_path, BASE, "b.yaml"))
    c = load_suite(write(tmp_path, BASE.replace("0.1]", "0.2]"), "c.yaml"))
    assert a.digest == b.digest != c.digest
