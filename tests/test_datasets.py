"""Loaders of fashion-mnist, mnist and cifar10: tiny files in the real on-disk formats, read by torchvision."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import DATASETS, DataError, cifar, load_dataset
from bench.data import files as mnist

IDX_UBYTE = 0x08  # IDX type code of unsigned bytes


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> None:
    """An IDX file: magic ``0x0000 <type> <ndim>``, big-endian uint32 dims, then the uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    blob = struct.pack(">I", (IDX_UBYTE << 8) | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    blob += array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as fh:
            fh.write(blob)
    else:
        path.write_bytes(blob)


def idx_set(folder: Path, *, n_train: int = 12, n_test: int = 7, compress: bool = False, seed: int = 0) -> dict:
    """The four MNIST-layout IDX files with random content; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, compress=compress)
    return arrays


@pytest.fixture(autouse=True)
def _fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A private data cache and no in-process memo between tests."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    for env in ("BENCH_MNIST_ROOT", "BENCH_FASHION_MNIST_ROOT", "BENCH_CIFAR10_ROOT"):
        monkeypatch.delenv(env, raising=False)
    mnist._read.cache_clear()
    cifar._read.cache_clear()
    yield
    mnist._read.cache_clear()
    cifar._read.cache_clear()


def test_registered_lazily() -> None:
    for name in ("fashion-mnist", "mnist", "cifar10"):
        assert name in DATASETS
        assert DATASETS.describe(name)


def test_mnist_from_torchvision_root_plain_idx(tmp_path: Path) -> None:
    arrays = idx_set(tmp_path / "root" / "MNIST" / "raw")
    test = load_dataset("mnist", "test", root=str(tmp_path / "root"))
    train = load_dataset("mnist", "train", root=str(tmp_path / "root"))
    assert test.x.shape == (7, 1, 28, 28) and test.x.dtype == torch.float32
    assert train.x.shape == (12, 1, 28, 28)
    # shipped order, uint8 / 255
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"].astype(np.float32) / 255.0).unsqueeze(1)
    assert torch.equal(test.x, expected)
    assert test.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert test.y.dtype == torch.int64
    assert test.class_names == tuple(f"{i} - {w}" for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    ))  # fmt: skip
    assert float(test.x.min()) >= 0.0 and float(test.x.max()) <= 1.0
    # nothing had to be unzipped: torchvision read the root in place
    assert not (tmp_path / "cache" / "data").exists()
    described = test.describe()
    assert described["n"] == 7 and len(described["digest"]) == 16
    assert "test split in shipped order" in described["source"]


def test_fashion_mnist_from_flat_gzip_folder_unzips_once_into_cache(tmp_path: Path) -> None:
    """Debian's layout: four .gz files side by side in a read-only folder."""
    src = tmp_path / "debian"
    arrays = idx_set(src, compress=True)
    assert sorted(p.name for p in src.iterdir()) == sorted(f"{n}.gz" for n in arrays)
    os.chmod(src, 0o555)
    try:
        data = load_dataset("fashion-mnist", "train", root=str(src))
    finally:
        os.chmod(src, 0o755)
    assert data.class_names[0] == "T-shirt/top" and len(data.class_names) == 10
    assert torch.equal(data.x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]).float() / 255)
    unzipped = list((tmp_path / "cache" / "data").glob("fashion-mnist-*/FashionMNIST/raw/*"))
    assert sorted(p.name for p in unzipped) == sorted(arrays)
    assert not [p for p in (tmp_path / "cache" / "data").rglob("*.tmp")], "temporary files left behind"
    stamps = {p: p.stat().st_mtime_ns for p in unzipped}
    mnist._read.cache_clear()
    again = load_dataset("fashion-mnist", "train", root=str(src))
    assert again.digest == data.digest
    assert {p: p.stat().st_mtime_ns for p in unzipped} == stamps, "the cache was rewritten"


def test_gzipped_files_inside_torchvision_raw_folder_and_env_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = idx_set(tmp_path / "r" / "MNIST" / "raw", compress=True)
    monkeypatch.setenv("BENCH_MNIST_ROOT", str(tmp_path / "r"))
    data = load_dataset("mnist", "test")
    assert data.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_debian_default_is_used_without_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    idx_set(tmp_path / "deb", compress=True)
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST", tmp_path / "deb")
    data = load_dataset("fashion-mnist", "test")
    assert len(data) == 7
    assert str(tmp_path / "deb") in data.source


def test_missing_files_say_which_and_where(tmp_path: Path) -> None:
    root = tmp_path / "partial"
    arrays = idx_set(root / "MNIST" / "raw")
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte not found under .*partial.*MNIST/raw") as info:
        load_dataset("mnist", "test", root=str(root))
    assert "download: true" in str(info.value)
    assert len(arrays) == 4


def test_no_root_names_the_option_and_env_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset.options.root .*\$BENCH_MNIST_ROOT"):
        load_dataset("mnist", "test")
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")
    with pytest.raises(DataError, match=r"BENCH_FASHION_MNIST_ROOT.*dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test")
    with pytest.raises(DataError, match=r"'download: true' needs a folder"):
        load_dataset("mnist", "test", download=True)


def test_bad_options_and_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown option\(s\) roots .*allowed: download, root"):
        load_dataset("mnist", "test", roots=str(tmp_path))
    with pytest.raises(DataError, match=r"dataset.options.download must be true or false"):
        load_dataset("fashion-mnist", "test", root=str(tmp_path), download="yes")
    with pytest.raises(DataError, match=r"unknown split 'valid' \(allowed: train, test\)"):
        load_dataset("cifar10", "valid", root=str(tmp_path))


def test_corrupt_idx_magic_is_a_data_error(tmp_path: Path) -> None:
    raw = tmp_path / "root" / "MNIST" / "raw"
    idx_set(raw)
    blob = bytearray((raw / "t10k-images-idx3-ubyte").read_bytes())
    blob[2] = 0x0D  # float32 type code: not the uint8 images torchvision expects
    (raw / "t10k-images-idx3-ubyte").write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"t10k"):
        load_dataset("mnist", "test", root=str(tmp_path / "root"))


def test_images_and_labels_of_different_length(tmp_path: Path) -> None:
    raw = tmp_path / "root" / "MNIST" / "raw"
    idx_set(raw)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte has 7 images but t10k-labels-idx1-ubyte has 3"):
        load_dataset("mnist", "test", root=str(tmp_path / "root"))


# -- CIFAR-10 pickle batches -------------------------------------------------------------------


def cifar_batches(folder: Path, *, per_batch: int = 4, n_test: int = 5, seed: int = 0) -> dict:
    """``data_batch_1..5``, ``test_batch`` and ``batches.meta`` as CIFAR-10 ships them (latin1 pickles)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        entry = {
            "batch_label": f"{name} of 6",
            "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),  # R plane, G plane, B plane, row-major
            "filenames": [f"img_{i}.png" for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        batches[name] = entry
    label_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {"num_cases_per_batch": per_batch, "label_names": label_names, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


def test_cifar10_pickle_batches_channel_layout(tmp_path: Path) -> None:
    batches = cifar_batches(tmp_path / "c" / "cifar-10-batches-py")
    test = load_dataset("cifar10", "test", root=str(tmp_path / "c"), verify=False)
    assert test.x.shape == (5, 3, 32, 32) and test.x.dtype == torch.float32
    raw = batches["test_batch"]["data"]
    # pixel (c, h, w) of sample i is byte c * 1024 + h * 32 + w of its row
    for i, c, h, w in [(0, 0, 0, 0), (1, 1, 5, 7), (4, 2, 31, 31), (2, 2, 0, 31)]:
        assert float(test.x[i, c, h, w]) == pytest.approx(raw[i, c * 1024 + h * 32 + w] / 255.0)
    assert test.y.tolist() == batches["test_batch"]["labels"]
    assert test.class_names[:2] == ("airplane", "automobile")
    train = load_dataset("cifar10", "train", root=str(tmp_path / "c"), verify=False)
    assert len(train) == 20
    assert train.y.tolist() == [label for i in range(1, 6) for label in batches[f"data_batch_{i}"]["labels"]]
    assert "MD5 not verified" in train.source


def test_cifar10_root_may_be_the_batches_folder_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cifar_batches(tmp_path / "cifar-10-batches-py")
    monkeypatch.setenv("BENCH_CIFAR10_ROOT", str(tmp_path / "cifar-10-batches-py"))
    assert len(load_dataset("cifar10", "test", verify=False)) == 5


def test_cifar10_md5_checked_before_unpickling(tmp_path: Path) -> None:
    """Default ``verify: true``: files that are not the official CIFAR-10 are refused unread."""
    cifar_batches(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataError, match=r"do not match the official CIFAR-10 MD5 sums.*verify: false"):
        load_dataset("cifar10", "test", root=str(tmp_path))


def test_cifar10_missing_batches_listed(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    cifar_batches(folder)
    (folder / "data_batch_3").unlink()
    (folder / "batches.meta").unlink()
    with pytest.raises(DataError, match=r"data_batch_3, batches.meta not found in .*cifar-10-batches-py"):
        load_dataset("cifar10", "train", root=str(tmp_path), verify=False)
    with pytest.raises(DataError, match=r"\$BENCH_CIFAR10_ROOT"):
        load_dataset("cifar10", "test")


# -- the real Fashion-MNIST (Debian package dataset-fashion-mnist, installed by scripts/setup-system.sh) ------


@pytest.mark.skipif(
    not mnist.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian package dataset-fashion-mnist is not installed"
)
def test_real_fashion_mnist_from_debian() -> None:
    test = load_dataset("fashion-mnist", "test")
    assert test.x.shape == (10_000, 1, 28, 28)
    # the published test set has exactly 1,000 images per class
    assert torch.bincount(test.y, minlength=10).tolist() == [1000] * 10
    assert test.class_names[9] == "Ankle boot"
    assert test.digest == load_dataset("fashion-mnist", "test").digest
    assert "/usr/share/datasets/fashion-mnist" in test.source
