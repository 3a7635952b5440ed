"""The caps of docs/security.md "Limits on input", each at its boundary (just under passes, just over fails), and
the hostile cases of issue 17 through the real CLI: one line, exit 2 (or 1), never a hang or a traceback.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import bench.cli
from bench import limits
from bench.engine.cell import load_cell
from bench.gate.baseline import BaselineError, decode_indices, parse_baseline, read_baseline
from bench.rundir import RunDir
from bench.suite import SuiteError, load_raw, read_yaml, validate

# The full app (bench.cli loads its commands lazily; its attribute `app` can be shadowed by the submodule).
app = bench.cli.full_app() if hasattr(bench.cli, "full_app") else bench.cli.common

SUITE: dict[str, Any] = {
    "name": "lim",
    "dataset": {"name": "digits", "n": 20},
    "models": ["mlp"],
    "attacks": ["fgsm"],
    "epsilons": [0, 0.1],
    "tracking": {"enabled": False},
}


def cli(*args: str) -> tuple[int, str]:
    """``bench ARGS`` in-process; asserts one error line at most and no traceback; returns (exit code, stderr)."""
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = result.stderr
    assert "Traceback" not in text and "Traceback" not in result.stdout
    assert len([line for line in text.splitlines() if line.startswith("error:")]) <= 1
    if result.exit_code:
        assert text.strip().splitlines()[-1].startswith("error:"), text  # progress lines may come before
    return result.exit_code, text


# -- suite files ------------------------------------------------------------------------------------


def test_suite_file_size_at_the_cap(tmp_path: Path) -> None:
    body = "name: lim\n"
    at_cap = tmp_path / "at.yaml"
    at_cap.write_text(body + "#" * (limits.SUITE_FILE_BYTES - len(body) - 1) + "\n")
    assert at_cap.stat().st_size == limits.SUITE_FILE_BYTES
    assert read_yaml(at_cap) == {"name": "lim"}
    over = tmp_path / "over.yaml"
    over.write_text(body + "#" * (limits.SUITE_FILE_BYTES - len(body)) + "\n")
    with pytest.raises(SuiteError, match=r"over\.yaml: suite file is larger than the limit of 1 MiB"):
        read_yaml(over)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_yaml_depth_at_the_cap(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(_nested(limits.YAML_DEPTH))
    assert read_yaml(tmp_path / "ok.yaml") is not None
    (tmp_path / "deep.yaml").write_text(_nested(limits.YAML_DEPTH + 1))
    with pytest.raises(SuiteError, match=r"deep\.yaml: YAML nested deeper than 64 levels"):
        read_yaml(tmp_path / "deep.yaml")


def _aliases(n: int) -> str:
    return "a: &a 0\nb: [" + ", ".join(["*a"] * n) + "]\n"


def test_yaml_alias_uses_at_the_cap(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(_aliases(limits.YAML_ALIASES))
    assert len(read_yaml(tmp_path / "ok.yaml")["b"]) == limits.YAML_ALIASES
    (tmp_path / "many.yaml").write_text(_aliases(limits.YAML_ALIASES + 1))
    with pytest.raises(SuiteError, match=r"many\.yaml: YAML more than 1000 alias uses"):
        read_yaml(tmp_path / "many.yaml")


def _expanding(pad: int) -> str:
    # root 1 + "x" 1 + seq 1 + 99 scalars + "y" 1 + seq 1 + 998 aliases x 100 nodes + pad scalars = 99_904 + pad
    return "x: &a [" + ", ".join(["0"] * 99) + "]\ny: [" + ", ".join(["*a"] * 998 + ["1"] * pad) + "]\n"


def test_yaml_expanded_nodes_at_the_cap(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(_expanding(96))  # exactly YAML_NODES
    assert len(read_yaml(tmp_path / "ok.yaml")["y"]) == 998 + 96
    (tmp_path / "big.yaml").write_text(_expanding(97))
    with pytest.raises(SuiteError, match=r"big\.yaml: YAML expands to more than 100000 YAML nodes"):
        read_yaml(tmp_path / "big.yaml")


def test_alias_bomb_in_epsilons_fails_fast(tmp_path: Path) -> None:
    levels = ["e0: &e0 [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]"]
    levels += [f"e{i}: &e{i} [{', '.join([f'*e{i - 1}'] * 9)}]" for i in range(1, 9)]
    text = yaml.safe_dump({k: v for k, v in SUITE.items() if k != "epsilons"}) + "\n".join(levels) + "\nepsilons: *e8\n"
    (tmp_path / "bomb.yaml").write_text(text)
    code, message = cli("validate", str(tmp_path / "bomb.yaml"))
    assert code == 2 and "bomb.yaml: YAML expands to more than" in message


def _chain(folder: Path, files: int) -> Path:
    """``s0.yaml`` including ``s1.yaml`` ... including ``s{files-1}.yaml``: ``files`` suite files in all."""
    for i in range(files):
        data = {"include": f"s{i + 1}.yaml"} if i + 1 < files else dict(SUITE)
        (folder / f"s{i}.yaml").write_text(yaml.safe_dump(data))
    return folder / "s0.yaml"


def test_include_count_at_the_cap(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    assert load_raw(_chain(tmp_path / "ok", limits.INCLUDE_FILES))["name"] == "lim"
    (tmp_path / "over").mkdir()
    with pytest.raises(SuiteError, match=r"include: more than 64 suite files"):
        load_raw(_chain(tmp_path / "over", limits.INCLUDE_FILES + 1))


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "folder"])
def test_include_of_a_special_file_is_refused_without_reading(tmp_path: Path, special: str) -> None:
    if special == "fifo":
        os.mkfifo(tmp_path / "fifo.yaml")
        target = "fifo.yaml"
    elif special == "folder":
        (tmp_path / "sub.yaml").mkdir()
        target = "sub.yaml"
    else:
        target = special
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"include": target, **SUITE}))
    code, message = cli("validate", str(tmp_path / "s.yaml"))
    assert code == 2 and f"include: {target!r} is not a regular file" in message
    if special == "fifo":  # named directly, too
        code, message = cli("validate", str(tmp_path / "fifo.yaml"))
        assert code == 2 and "fifo.yaml: suite file must be a regular file" in message


def test_epsilon_list_at_the_cap() -> None:
    many = [i / 10_000 for i in range(limits.EPSILONS)]
    assert len(validate({**SUITE, "epsilons": many}).epsilons) == limits.EPSILONS
    with pytest.raises(SuiteError, match=r"epsilons.*1001 epsilons, more than the limit of 1000"):
        validate({**SUITE, "epsilons": [*many, 0.5]})


def test_n_jobs_capped_at_the_cores_with_a_warning() -> None:
    cores = limits.cores()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert limits.cap_n_jobs(cores) == cores
        assert limits.cap_n_jobs(-1) == -1
    with pytest.warns(limits.NJobsWarning, match=rf"n_jobs: {cores + 1} workers asked for.*using {cores}"):
        assert limits.cap_n_jobs(cores + 1) == cores
    with pytest.warns(limits.NJobsWarning, match="--n-jobs: 100000 workers"):
        assert limits.cap_n_jobs(100_000, source="--n-jobs") == cores


def test_non_utf8_and_deeply_nested_suites_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    code, message = cli("validate", str(tmp_path / "latin.yaml"))
    assert code == 2 and "latin.yaml: suite file is not UTF-8 text (byte 9" in message
    (tmp_path / "deep.yaml").write_text("name: x\nextra: " + _nested(50_000) + "\n")
    code, message = cli("validate", str(tmp_path / "deep.yaml"))
    assert code == 2 and "deep.yaml: YAML nested deeper than" in message


# -- baselines ------------------------------------------------------------------------------------


def _point(eps: float, n: int = 4, robust: int = 2) -> dict[str, Any]:
    acc = robust / n
    return {"eps": eps, "n": n, "robust": robust, "robust_accuracy": acc, "ci_low": 0.0, "ci_high": 1.0,
            "flags_digest": "0"}  # fmt: skip


def _cell(i: int, epsilons: list[float]) -> dict[str, Any]:
    return {"model": f"m{i}", "attack": "fgsm", "attack_name": "fgsm", "attack_params": {}, "norm": "linf",
            "targeted": False, "epsilons": epsilons, "clean_accuracy": 0.5, "auc": 0.5, "auc_sd": 0.0,
            "points": [_point(e) for e in epsilons]}  # fmt: skip


def _baseline(cells: list[dict[str, Any]], **over: Any) -> str:
    raw = {"format": "bench-baseline", "version": 1, "suite": "s", "suite_digest": "d",
           "data": {"name": "digits", "split": "test", "n": 4, "digest": "x"}, "cells": cells, **over}  # fmt: skip
    return json.dumps(raw)


def test_baseline_cells_at_the_cap() -> None:
    cells = [_cell(i, [0.0]) for i in range(limits.BASELINE_CELLS)]
    assert len(parse_baseline(_baseline(cells), source="b.json").cells) == limits.BASELINE_CELLS
    with pytest.raises(BaselineError, match=r"b\.json: cells: List should have at most 10000 items"):
        parse_baseline(_baseline([*cells, _cell(-1, [0.0])]), source="b.json")


def test_baseline_epsilons_at_the_cap() -> None:
    grid = [i / 10_000 for i in range(limits.EPSILONS)]
    assert len(parse_baseline(_baseline([_cell(0, grid)]), source="b.json").cells[0].points) == limits.EPSILONS
    with pytest.raises(BaselineError, match=r"b\.json: cells\[0\]\.epsilons: List should have at most 1000 items"):
        parse_baseline(_baseline([_cell(0, [*grid, 0.5])]), source="b.json")


def test_baseline_integer_digits_at_the_cap() -> None:
    ok = _baseline([_cell(0, [0.0])], created="1" * 0, extra_int=int("9" * limits.INT_DIGITS))
    with pytest.raises(BaselineError) as under:  # parsed; then refused as an unknown field, not for its size
        parse_baseline(ok, source="b.json")
    assert "extra_int: unknown field" in str(under.value)
    huge = _baseline([_cell(0, [0.0])]).replace('"n": 4,', '"n": ' + "7" * 5000 + ",", 1)
    with pytest.raises(BaselineError, match=r"^b\.json: an integer of 5000 digits \(limit 30\)$"):
        parse_baseline(huge, source="b.json")


def test_decompressed_indices_at_the_cap() -> None:
    def packed(n: int) -> str:
        return base64.b64encode(zlib.compress(np.zeros(n, dtype="<i4").tobytes(), 1)).decode()

    assert len(decode_indices(packed(limits.FLAG_SAMPLES))) == limits.FLAG_SAMPLES
    with pytest.raises(ValueError, match="decompresses to more than 10000000 sample indices"):
        decode_indices(packed(limits.FLAG_SAMPLES + 1))


def test_baseline_file_size_at_the_cap(tmp_path: Path) -> None:
    text = _baseline([_cell(0, [0.0])])
    at_cap = tmp_path / "at.json"
    at_cap.write_text(text + " " * (limits.BASELINE_FILE_BYTES - len(text)))
    assert at_cap.stat().st_size == limits.BASELINE_FILE_BYTES
    assert read_baseline(at_cap).cells[0].model == "m0"
    over = tmp_path / "over.json"
    over.write_text(text + " " * (limits.BASELINE_FILE_BYTES - len(text) + 1))
    with pytest.raises(BaselineError, match=r"over\.json: baseline file is larger than the limit of 64 MiB"):
        read_baseline(over)


# -- run directories through the CLI -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(report_run: Path) -> Path:
    """A real finished run directory (conftest's ``report_run``, shared with the report tests); copied before edits."""
    return report_run


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "copy"))


def test_truncated_parquet_in_a_run_dir(tiny_run: Path, tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path)
    data = (run / "results.parquet").read_bytes()
    (run / "results.parquet").write_bytes(data[: len(data) // 2])
    for args in (["report", str(run), "--out", str(tmp_path / "r")], ["baseline", str(run), "-o", str(tmp_path / "b")]):
        code, message = cli(*args)  # its sha256 is no longer the manifest's: refused before it is parsed
        assert code == 2 and "results.parquet: its sha256" in message and "copy" in message
        code, message = cli(*args, "--trust-edited")  # believed on purpose: then it cannot be read
        assert code == 2 and "unreadable results" in message and "copy" in message
    run2 = _copy(tiny_run, tmp_path / "2")
    (run2 / "samples.parquet").write_bytes(b"PAR1 not really")
    code, message = cli("baseline", str(run2), "-o", str(tmp_path / "b2"), "--trust-edited")
    assert code == 2 and "samples.parquet" in message and ("unreadable" in message or "corrupt" in message)


@pytest.mark.parametrize(
    "content", ["[1, 2", '["a list"]', '{"mlp": 5}', '{"mlp": {"parameters": ' + "9" * 5000 + "}}"]
)
def test_odd_models_json_in_a_run_dir(tiny_run: Path, tmp_path: Path, content: str) -> None:
    run = _copy(tiny_run, tmp_path)
    (run / "models.json").write_text(content)
    code, message = cli("report", str(run), "--out", str(tmp_path / "r"))
    assert code == 2 and "models.json" in message


def test_run_json_file_size_and_big_integers(tiny_run: Path, tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path)
    manifest = (run / "manifest.json").read_text()
    (run / "manifest.json").write_text(manifest + " " * (limits.RUN_JSON_BYTES - len(manifest.encode())))
    code, message = cli("baseline", str(run), "-o", str(tmp_path / "b.json"))
    assert code == 0, message
    (run / "manifest.json").write_text(manifest + " " * (limits.RUN_JSON_BYTES - len(manifest.encode()) + 1))
    code, message = cli("baseline", str(run), "-o", str(tmp_path / "b.json"))
    assert code == 2 and "manifest is larger than the limit of 16 MiB" in message
    (run / "manifest.json").write_text(manifest.replace("{", '{"huge": ' + "1" * 5000 + ",", 1))
    code, message = cli("sync", str(run))
    assert code == 2 and "an integer of 5000 digits" in message


def test_report_out_pointing_at_a_file(tiny_run: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    code, message = cli("report", str(tiny_run), "--out", str(tmp_path / "afile"))
    assert code == 2 and "afile" in message


def test_baseline_with_a_huge_integer_through_check(tiny_run: Path, tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text(_baseline([_cell(0, [0.0])]).replace('"n": 4,', '"n": ' + "7" * 5000 + ",", 1))
    code, message = cli("check", str(tiny_run), "--baseline", str(tmp_path / "b.json"))
    assert code == 2 and "b.json: an integer of 5000 digits" in message


def _suite_file(tmp_path: Path, **over: Any) -> Path:
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**SUITE, **over}))
    return tmp_path / "s.yaml"


def test_huge_seed_long_label_corrupt_npz_through_run(tmp_path: Path) -> None:
    code, message = cli("run", str(_suite_file(tmp_path, seed=10**40)), "--out", str(tmp_path / "o1"))
    assert code == 2
    code, message = cli("run", str(_suite_file(tmp_path, attacks=[{"name": "fgsm", "label": "a" * 300}])),
                        "--out", str(tmp_path / "o2"))  # fmt: skip
    assert code == 2 and "File name too long" in message
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    code, message = cli("run", str(_suite_file(tmp_path, models=[{"name": "mlp", "weights": "bad.npz"}])),
                        "--out", str(tmp_path / "o3"))  # fmt: skip
    assert code == 2 and "bad.npz" in message


def test_n_jobs_option_over_the_cores_warns_in_one_line(tmp_path: Path) -> None:
    args = [
        "run",
        str(_suite_file(tmp_path)),
        "--out",
        str(tmp_path / "o"),
        "--n-jobs",
        "100000",
        "--backend",
        "threading",
    ]
    with pytest.warns(limits.NJobsWarning, match=r"--n-jobs: 100000 workers asked for") as caught:
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    # clamped to the cores, then to the cells left (this suite has one): never more workers than cells
    assert "n_jobs=1)" in result.stdout + result.stderr
    warning = caught[0]
    line = warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno)
    assert line == f"warning: {warning.message}\n"  # what the CLI prints: one line, no source line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    result = CliRunner().invoke(app, ["--debug", "validate", str(tmp_path / "latin.yaml")])
    assert result.exit_code == 2 and "not UTF-8" in result.stderr and "Traceback" in result.stderr


def test_handler_exit_codes_for_os_and_unexpected_errors() -> None:

    describe = sys.modules["bench.cli.common"].describe
    assert describe(OSError(errno.ENOSPC, "No space left on device", "/out/x")) == (
        "/out/x: No space left on device (errno ENOSPC)",
        1,
    )
    assert describe(OSError(errno.ENAMETOOLONG, "File name too long", "/out/aaa")) == (
        "/out/aaa: File name too long",
        2,
    )
    assert describe(IsADirectoryError(errno.EISDIR, "Is a directory", "/out")) == ("/out: Is a directory", 2)
    message, code = describe(RuntimeError("boom\nsecond line"))
    assert code == 1 and message == "unexpected RuntimeError: boom (run with --debug for the traceback)"


def test_run_directory_tables_are_size_capped_before_pandas_opens_them(
    report_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """results/per-sample parquet and cell tables: at the cap they are read, one byte over it is refused in one line."""
    run = RunDir(report_run)
    size = run.samples.stat().st_size
    monkeypatch.setattr(limits, "RUN_TABLE_BYTES", size)
    assert len(run.read_samples()) > 0
    monkeypatch.setattr(limits, "RUN_TABLE_BYTES", size - 1)
    with pytest.raises(limits.LimitError, match=r"per-sample table is larger than the limit of"):
        run.read_samples()
    cell_id = next(p.name for p in (report_run / "cells").iterdir() if p.is_dir())
    with pytest.raises(limits.LimitError, match=r"larger than the limit"):
        monkeypatch.setattr(limits, "RUN_TABLE_BYTES", 16)
        load_cell(run, cell_id)


# -- a cell's examples.npz: read with caps, checked before the report or MLflow draws it -------------


def _examples_file(run: Path) -> Path:
    return sorted((run / "cells").glob("*/examples.npz"))[0]


def _rewrite(path: Path, **changes: Any) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        arrays.pop(key)
    with path.open("wb") as fh:
        np.savez_compressed(fh, **arrays)


def test_a_huge_class_index_in_examples_fails_the_report_in_one_line(tiny_run: Path, tmp_path: Path) -> None:
    """It used to hang: the example grid built one label per class up to the largest index (10**9 here)."""
    run = _copy(tiny_run, tmp_path)
    path = _examples_file(run)
    with np.load(path, allow_pickle=False) as data:
        y = data["y"].copy()
    y[0] = 10**9
    _rewrite(path, y=y)
    code, message = cli("report", str(run), "--out", str(tmp_path / "r"))
    assert code == 2 and f"{path.parent.name}/examples.npz: y: class indices from {y.min()} to 1000000000" in message
    assert "allowed: 0 to 99999" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"x_adv": None}, "missing array(s) x_adv (an examples file holds x, y, x_adv, adv_pred, epsilons)"),
        ({"x_adv": np.zeros((2, 1, 2, 4, 4), np.float32)}, "x_adv: 2 channel(s) of 4 x 4 pixels (allowed: 1 or 3"),
        ({"x_adv": np.zeros((2, 4), np.float32)}, "x_adv: expected floats of shape (epsilons, samples"),
        ({"epsilons": np.array([0.0, np.inf])}, "epsilons: expected numbers of shape"),
        ({"adv_pred": np.full((1, 1), -1)}, "adv_pred: expected integers of shape"),
    ],
)
def test_examples_with_the_wrong_arrays_are_refused_naming_the_array(
    tiny_run: Path, tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    run = _copy(tiny_run, tmp_path)
    path = _examples_file(run)
    _rewrite(path, **change)
    with pytest.raises(ValueError, match=r"examples\.npz: ") as caught:
        RunDir(run).read_examples(path.parent.name)
    assert expected in str(caught.value)


def test_examples_file_negative_class_infinite_eps_pickles_and_non_archives(tiny_run: Path, tmp_path: Path) -> None:
    from bench.examples_file import ExamplesFileError, read_examples_file

    run = _copy(tiny_run, tmp_path)
    path = _examples_file(run)
    arrays = read_examples_file(path)  # the run's own file passes
    assert arrays["x_adv"].shape[:2] == arrays["adv_pred"].shape
    pred = arrays["adv_pred"].copy()
    pred[0, 0] = -3
    _rewrite(path, adv_pred=pred)
    with pytest.raises(ExamplesFileError, match=r"adv_pred: class indices from -3 to"):
        read_examples_file(path)
    _rewrite(path, adv_pred=arrays["adv_pred"], epsilons=np.where(arrays["epsilons"] > 0, np.inf, 0.0))
    with pytest.raises(ExamplesFileError, match="epsilons: not all finite"):
        read_examples_file(path)
    with path.open("wb") as fh:
        np.savez(fh, **{**arrays, "y": np.array([object()] * len(arrays["y"]), dtype=object)})
    with pytest.raises(ExamplesFileError, match=r"unreadable examples file .*allow_pickle"):
        read_examples_file(path)
    with path.open("wb") as fh:
        np.save(fh, arrays["x"])
    with pytest.raises(ExamplesFileError, match=r"not an \.npz archive"):
        read_examples_file(path)


def test_examples_file_inflated_size_at_the_cap(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap holds before any array is decompressed (a zip bomb never inflates)."""
    import zipfile

    from bench.examples_file import read_examples_file

    run = _copy(tiny_run, tmp_path)
    path = _examples_file(run)
    with zipfile.ZipFile(path) as archive:
        inflated = sum(info.file_size for info in archive.infolist())
    monkeypatch.setattr(limits, "EXAMPLES_BYTES", inflated)
    assert read_examples_file(path)["x"].size > 0
    monkeypatch.setattr(limits, "EXAMPLES_BYTES", inflated - 1)
    with pytest.raises(limits.LimitError, match=rf"inflates to {inflated:,} bytes, over the limit of {inflated - 1:,}"):
        read_examples_file(path)


def _lying_npz(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose member ``x_adv`` states ``shape`` in its header but holds 16 bytes of data."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_adv.npy", header.getvalue() + bytes(16))  # the header writer writes the magic too


def test_an_npy_header_that_states_more_than_its_member_holds_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    """np.load allocates what a member's header states before reading it: 16 bytes claiming 10**14 floats
    raised a MemoryError traceback ("Unable to allocate 364 TiB") from the report and the MLflow mirror."""
    import zipfile

    from bench.examples_file import ExamplesFileError, read_examples_file
    from bench.npzfile import read_npz_capped
    from model_zoo.external import ExternalModelError, load_external

    run = _copy(tiny_run, tmp_path)
    path = _examples_file(run)
    _lying_npz(path, (10**7, 10**7, 1, 1, 1))
    with pytest.raises(limits.LimitError, match=r"examples file holds arrays of 400,000,000,000,000 bytes"):
        read_examples_file(path)
    _lying_npz(path, (2, 3, 1, 4, 4))  # under the cap, but more than the member holds
    with pytest.raises(ExamplesFileError, match=r"member 'x_adv.npy' states shape \(2, 3, 1, 4, 4\) \(384 bytes\)"):
        read_examples_file(path)
    code, message = cli("report", str(run), "--out", str(tmp_path / "r"))
    assert code == 2 and "x_adv.npy' states shape" in message
    weights = tmp_path / "mlp.npz"
    _lying_npz(weights, (10**6, 10**6))
    with pytest.raises(ExternalModelError, match=r"weights .*mlp\.npz: cannot be read .*holds arrays of"):
        load_external("mlp", weights=weights, input_shape=(1, 8, 8), num_classes=10)
    honest = tmp_path / "honest.npz"
    np.savez(honest, a=np.arange(6, dtype=np.int64).reshape(2, 3))
    assert read_npz_capped(honest, 1024, what="test")["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    with zipfile.ZipFile(honest) as archive:
        inflated = sum(info.file_size for info in archive.infolist())  # the 48 data bytes and the header
    assert read_npz_capped(honest, inflated, what="test")["a"].shape == (2, 3)
    with pytest.raises(
        limits.LimitError, match=rf"test inflates to {inflated} bytes, over the limit of {inflated - 1}"
    ):
        read_npz_capped(honest, inflated - 1, what="test")


def test_an_npz_with_an_encrypted_or_unknown_compression_member_is_refused_in_one_line(tmp_path: Path) -> None:
    """zipfile raises RuntimeError (a password is needed) and NotImplementedError (method 99) for these:
    both reached the user as tracebacks from the examples reader and the .npz weights reader."""
    from bench.examples_file import ExamplesFileError, read_examples_file
    from model_zoo.external import ExternalModelError, load_external

    for flag_offset, value, message in ((8, b"\x01\x00", "encrypted"), (10, b"\x63\x00", "compression")):
        path = tmp_path / f"patched-{message}.npz"
        np.savez(path, x=np.zeros(3, dtype=np.float32))
        data = bytearray(path.read_bytes())
        central = data.index(b"PK\x01\x02")  # the central directory entry zipfile trusts
        data[central + flag_offset : central + flag_offset + 2] = value
        path.write_bytes(bytes(data))
        with pytest.raises(
            ExamplesFileError, match=rf"{path.name}: unreadable examples file \((RuntimeError|NotImplementedError)"
        ):
            read_examples_file(path)
        with pytest.raises(ExternalModelError, match=rf"{path.name}"):
            load_external("mlp", weights=path, input_shape=(1, 8, 8), num_classes=10)
