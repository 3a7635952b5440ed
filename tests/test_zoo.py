from __future__ import annotations

import pytest
import torch

from bench.data import load_dataset
from model_zoo import MODELS, CheckpointError, build_model, get_model, reference
from model_zoo.architectures import Normalize
from model_zoo.training import accuracy, load_state_dict

ARCHS = ["mlp", "mlp3", "lenet", "cnn", "convnet", "convnet_bn"]


def zoo_model(name: str, dataset: str, **kwargs: object):
    """``get_model`` on ``dataset``'s train split (the zoo never loads data: the caller hands it over)."""
    return get_model(name, dataset, train=load_dataset(dataset, "train"), **kwargs)


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
def test_output_shape_and_normalize_first(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, shape, 10).eval()
    out = model(torch.rand(3, *shape))
    assert out.shape == (3, 10)
    assert isinstance(next(iter(model.children())), Normalize)


def test_cifar_cnn_shape_and_size() -> None:
    model = build_model("cifar_cnn", (3, 32, 32), 10)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) >= 50_000


DIGITS_FLOORS = {"mlp": 0.93, "lenet": 0.76, "cnn": 0.83, "convnet": 0.94, "convnet_bn": 0.94}


@pytest.mark.parametrize(("name", "floor"), list(DIGITS_FLOORS.items()))
def test_training_floor_on_digits(name: str, floor: float) -> None:
    """Each architecture trained by its recipe on digits (no reference weights: this really trains, seed 0).

    A retrained model lands elsewhere on another CPU, so each floor is a measured spread's minimum minus a
    margin. Measured (torch 2.14.1, Intel Xeon with AVX-512, 2 cores): ``get_model(name, "digits",
    train=..., seed=s, weights="retrain")`` into an empty BENCH_CACHE for seeds 0..4 at
    ``torch.set_num_threads`` 1 and 2, plus seed 0 at 1 and 2 threads in a subprocess with
    ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (an AVX2-only CPU); accuracy on the 360 test
    digits (one sample = 0.0028). sd: sample standard deviation (n-1) of the 5 seeds at 1 thread; min and
    mean over the 10 AVX-512 runs, min also over the AVX2 ones (one value where 1 and 2 threads agreed):

    ===========  =====  =====  ======  =============  ======  =====
    arch         min    mean   sd      AVX2 seed 0    margin  floor
    ===========  =====  =====  ======  =============  ======  =====
    mlp          0.961  0.969  0.0052  0.961          0.030   0.93
    lenet        0.869  0.928  0.0363  0.919          0.109   0.76
    cnn          0.906  0.933  0.0244  0.933          0.073   0.83
    convnet      0.978  0.980  0.0036  0.978          0.030   0.94
    convnet_bn   0.978  0.986  0.0048  0.989/0.986    0.030   0.94
    ===========  =====  =====  ======  =============  ======  =====

    margin = max(0.03, 3 sd); floor = min - margin, rounded down to 0.01. Seeds, not CPUs, make the spread:
    every run's weights digest differed (threads and ISA change the rounding), yet a seed's accuracy moved
    by at most 2 test digits (cnn seed 3: 0.967 / 0.972) across threads and AVX2 / AVX-512.
    """
    test = load_dataset("digits", "test")
    trained = zoo_model(name, "digits")
    assert not trained.model.training
    measured = accuracy(trained.model, test.x, test.y, device=torch.device("cpu"))
    assert measured >= floor, (measured, trained.weights_note)


def test_cache_second_call_trains_nothing_and_key_tracks_recipe(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    first = zoo_model("mlp", "digits", recipe={"epochs": 2})
    assert first.trained_now and first.checkpoint.exists() and first.checkpoint.parent == tmp_path / "models"
    second = zoo_model("mlp", "digits", recipe={"epochs": 2})
    assert not second.trained_now and second.key == first.key
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    third = zoo_model("mlp", "digits", recipe={"epochs": 3})
    assert third.trained_now and third.key != first.key


def test_training_is_deterministic(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "a"))
    torch.manual_seed(123)  # the global generator's state must not leak into the initial weights
    a = zoo_model("lenet", "digits", recipe={"epochs": 1})
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "b"))
    torch.manual_seed(456)
    torch.rand(1000)
    b = zoo_model("lenet", "digits", recipe={"epochs": 1})
    for ta, tb in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(ta, tb)


def test_corrupt_and_mismatched_checkpoints(tmp_path) -> None:
    model = build_model("mlp", (1, 8, 8), 10)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read as a weights-only state_dict"):
        load_state_dict(model, bad)
    other = tmp_path / "other.pt"
    torch.save(build_model("mlp", (1, 28, 28), 10).state_dict(), other)
    with pytest.raises(
        CheckpointError, match=r"tensor '3.weight' has shape \(200, 784\), the architecture expects \(200, 64\)"
    ):
        load_state_dict(model, other)
    missing = tmp_path / "missing.pt"
    torch.save({"0.mean": torch.zeros(1, 1, 1, 1)}, missing)
    with pytest.raises(CheckpointError, match=r"missing: .*3\.weight"):
        load_state_dict(model, missing)


def test_pickled_objects_are_refused(tmp_path) -> None:
    """weights_only=True: a checkpoint carrying arbitrary Python objects is not unpickled."""
    import pickle

    evil = tmp_path / "evil.pt"

    evil.write_bytes(pickle.dumps({"3.weight": print}))
    with pytest.raises(CheckpointError, match="weights-only"):
        load_state_dict(build_model("mlp", (1, 8, 8), 10), evil)


def test_zoo_entries_describe_their_recipes() -> None:
    for name in MODELS.names():
        assert MODELS.get(name).recipe.epochs > 0


@pytest.mark.parametrize(
    ("name", "floor"),
    [("mlp", 0.90), ("lenet", 0.95), ("cnn", 0.92), ("lenet_at", 0.85), ("lenet_quantized", 0.95)],
)
def test_mnist5k_accuracy_floors(name: str, floor: float) -> None:
    """The zoo's mnist5k models are their shipped reference weights, and score what ``index.json`` records.

    Retraining lands elsewhere on another CPU (cnn retrained on one machine scored 0.948 < 0.95), so the
    assertion is on the reference weights: loaded, not trained, whatever the machine. Inference of fixed
    weights can round differently on another CPU only at a borderline sample, hence one sample (1e-3 of the
    1,000 test digits) of tolerance around the recorded accuracy. The floors (the issue's for mlp and
    lenet, 0.85 for lenet_at as issue #15's clean floor, lenet's for lenet_quantized; cnn's reference is
    0.938) guard a re-recorded reference that is no good.
    """
    test = load_dataset("mnist5k", "test")
    trained = zoo_model(name, "mnist5k")
    assert trained.weights == "reference", trained.weights_note
    assert not trained.trained_now and not trained.model.training
    entry = reference.reference_for(trained.key)
    assert entry is not None and entry.sha256 == trained.weights_sha256 and entry.clean_accuracy is not None
    measured = accuracy(trained.model, test.x, test.y, device=torch.device("cpu"))
    assert measured == pytest.approx(entry.clean_accuracy, abs=1e-3), (measured, entry.clean_accuracy)
    assert measured >= floor


CONVNET_MNIST5K_FLOOR = 0.94
"""convnet retrained on mnist5k (1,000 test digits). Measured as for :func:`test_training_floor_on_digits`
(AVX-512, 1 thread, empty cache): seeds 0..4 scored 0.970 0.970 0.976 0.973 0.973 (min 0.970, mean 0.972,
sd 0.0025; seed 0's digest is not the reference's, which scored 0.972). Margin max(0.03, 3 sd) = 0.03;
floor 0.970 - 0.03 = 0.94."""


@pytest.mark.slow
def test_mnist5k_accuracy_floor_convnet() -> None:
    """convnet's floor: 15 epochs of a wider net, too long for the default run.

    Its reference weights are not shipped (``bench zoo import`` installs them), so this trains by the recipe
    unless they were imported; a retrained model lands elsewhere on another CPU, hence the margin.
    """
    test = load_dataset("mnist5k", "test")
    trained = zoo_model("convnet", "mnist5k")
    measured = accuracy(trained.model, test.x, test.y, device=torch.device("cpu"))
    assert measured >= CONVNET_MNIST5K_FLOOR, (measured, trained.weights_note)
