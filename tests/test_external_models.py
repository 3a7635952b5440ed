"""External models (factory + .pt / .npz weights), their suite integration, and the zoo's mlp3 / cifar_cnn."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.suite import SuiteError, load_suite
from model_zoo import MODELS, CheckpointError, build_model
from model_zoo.architectures import Normalize
from model_zoo.external import ExternalModelError, linear_layers, load_external


class TinyNet(nn.Module):
    """A factory-built model that knows nothing of input_shape / num_classes."""

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def make_tiny(*, width: int = 3) -> nn.Module:
    return TinyNet(width)


def not_a_model(input_shape: tuple[int, int, int], num_classes: int) -> str:
    return "a string"


NOT_CALLABLE = 42


def _seeded(name: str, shape: tuple[int, int, int], seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, shape, 10).eval()


def _numpy_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The numpy assignment's layout: fc<k>.weight as (in, out), fc<k>.bias."""
    state = model.state_dict()
    out = {}
    for k, name in enumerate(linear_layers(model), start=1):
        out[f"fc{k}.weight"] = state[f"{name}.weight"].numpy().T.copy()
        out[f"fc{k}.bias"] = state[f"{name}.bias"].numpy().copy()
    return out


def test_pt_state_dict_round_trip_same_logits(tmp_path: Path) -> None:
    original = _seeded("lenet", (1, 28, 28))
    torch.save(original.state_dict(), tmp_path / "lenet.pt")
    loaded = load_external(
        "lenet",
        factory="model_zoo.architectures:lenet",
        weights=tmp_path / "lenet.pt",
        input_shape=(1, 28, 28),
        num_classes=10,
    )
    x = torch.rand(5, 1, 28, 28)
    assert not loaded.training
    assert torch.equal(loaded(x), original(x))


def test_npz_numpy_layout_round_trip_mlp3(tmp_path: Path) -> None:
    original = _seeded("mlp3", (1, 28, 28))
    arrays = _numpy_arrays(original)
    assert arrays["fc1.weight"].shape == (784, 2048) and arrays["fc4.weight"].shape == (512, 10)
    np.savez(tmp_path / "mlp3.npz", **arrays)
    loaded = load_external("mlp3", weights=tmp_path / "mlp3.npz", input_shape=(1, 28, 28), num_classes=10)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded(x), original(x))
    # a fresh model of the same architecture gives different logits: the weights really were loaded
    assert not torch.allclose(_seeded("mlp3", (1, 28, 28), seed=2)(x), original(x))


def test_npz_out_in_layout_with_state_dict_keys(tmp_path: Path) -> None:
    original = _seeded("lenet", (1, 8, 8))
    state = {k: v.numpy() for k, v in original.state_dict().items() if not k.startswith("0.")}
    np.savez(tmp_path / "lenet.npz", **state)
    loaded = load_external(
        "lenet", weights=tmp_path / "lenet.npz", layout="out_in", input_shape=(1, 8, 8), num_classes=10
    )
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded(x), original(x))


def test_npz_float16_arrays_are_cast(tmp_path: Path) -> None:
    original = _seeded("mlp", (1, 8, 8))
    np.savez(tmp_path / "half.npz", **{k: v.astype(np.float16) for k, v in _numpy_arrays(original).items()})
    loaded = load_external("mlp", weights=tmp_path / "half.npz", input_shape=(1, 8, 8), num_classes=10)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(6, 1, 8, 8)
    torch.testing.assert_close(loaded(x), original(x), atol=2e-2, rtol=0)


def test_npz_wrong_layout_names_the_tensor(tmp_path: Path) -> None:
    """Arrays stored (out, in) but declared in_out: the first linear weight's shape is refused."""
    original = _seeded("mlp3", (1, 28, 28))
    arrays = _numpy_arrays(original)
    arrays = {k: (v.T.copy() if k.endswith("weight") else v) for k, v in arrays.items()}
    np.savez(tmp_path / "w.npz", **arrays)
    with pytest.raises(
        ExternalModelError,
        match=r"array 'fc1.weight' \(tensor '3.weight'\) has shape \(2048, 784\), the architecture expects "
        r"\(2048, 784\) \(\(in_features, out_features\) = \(784, 2048\) in layout 'in_out'\)",
    ):
        load_external("mlp3", weights=tmp_path / "w.npz", input_shape=(1, 28, 28), num_classes=10)


def test_npz_mismatches(tmp_path: Path) -> None:
    arrays = _numpy_arrays(_seeded("mlp", (1, 8, 8)))
    kw = {"input_shape": (1, 8, 8), "num_classes": 10}

    np.savez(tmp_path / "short.npz", **{k: v for k, v in arrays.items() if k != "fc2.bias"})
    with pytest.raises(ExternalModelError, match=r"no array for tensor\(s\) 5.bias \(fc2.bias\)"):
        load_external("mlp", weights=tmp_path / "short.npz", **kw)

    np.savez(tmp_path / "extra.npz", **arrays, fc3_weight=np.zeros(3))
    with pytest.raises(ExternalModelError, match=r"array 'fc3_weight' matches no tensor of the model"):
        load_external("mlp", weights=tmp_path / "extra.npz", **kw)

    np.savez(tmp_path / "deep.npz", **arrays, **{"fc3.bias": np.zeros(10, dtype=np.float32)})
    with pytest.raises(ExternalModelError, match=r"'fc3.bias' names linear layer 3, the model has 2"):
        load_external("mlp", weights=tmp_path / "deep.npz", **kw)

    bad = dict(arrays, **{"fc2.bias": np.zeros(11, dtype=np.float32)})
    np.savez(tmp_path / "bias.npz", **bad)
    with pytest.raises(ExternalModelError, match=r"'fc2.bias' \(tensor '5.bias'\) has shape \(11,\).*expects \(10,\)"):
        load_external("mlp", weights=tmp_path / "bias.npz", **kw)

    np.savez(tmp_path / "twice.npz", **arrays, **{"5.bias": arrays["fc2.bias"]})
    with pytest.raises(ExternalModelError, match=r"both set '5.bias'"):
        load_external("mlp", weights=tmp_path / "twice.npz", **kw)

    np.savez(tmp_path / "obj.npz", **dict(arrays, **{"fc1.bias": np.array([{"a": 1}], dtype=object)}))
    with pytest.raises(ExternalModelError, match=r"cannot be read as an .npz of numeric arrays"):
        load_external("mlp", weights=tmp_path / "obj.npz", **kw)


def test_normalize_buffers_may_be_omitted_but_batchnorm_buffers_may_not(tmp_path: Path) -> None:
    model = _seeded("convnet_bn", (1, 8, 8))
    normalize = [k for k, m in model.named_modules() if isinstance(m, Normalize)]
    assert normalize == ["0"]
    state = {k: v.numpy() for k, v in model.state_dict().items() if not k.startswith("0.")}
    np.savez(tmp_path / "ok.npz", **state)
    load_external("convnet_bn", weights=tmp_path / "ok.npz", layout="out_in", input_shape=(1, 8, 8), num_classes=10)
    running = next(k for k in state if k.endswith("running_mean"))
    np.savez(tmp_path / "no-stats.npz", **{k: v for k, v in state.items() if k != running})
    with pytest.raises(ExternalModelError, match=rf"no array for tensor\(s\) {running}"):
        load_external(
            "convnet_bn", weights=tmp_path / "no-stats.npz", layout="out_in", input_shape=(1, 8, 8), num_classes=10
        )


def test_pt_mismatch_and_unsafe_pickles(tmp_path: Path) -> None:
    torch.save(_seeded("mlp", (1, 8, 8)).state_dict(), tmp_path / "mlp.pt")
    with pytest.raises(CheckpointError, match=r"does not match the architecture \(missing: .*unexpected: "):
        load_external("lenet", weights=tmp_path / "mlp.pt", input_shape=(1, 8, 8), num_classes=10)
    torch.save(_seeded("mlp", (1, 28, 28)).state_dict(), tmp_path / "mlp28.pt")
    with pytest.raises(CheckpointError, match=r"tensor '3.weight' has shape \(200, 784\), the architecture expects"):
        load_external("mlp", weights=tmp_path / "mlp28.pt", input_shape=(1, 8, 8), num_classes=10)
    torch.save({"model": TinyNet()}, tmp_path / "pickled.pt")  # a whole pickled module: refused by weights_only
    with pytest.raises(CheckpointError, match=r"cannot be read as a weights-only state_dict"):
        load_external("x", factory=f"{__name__}:make_tiny", weights=tmp_path / "pickled.pt", input_shape=(1, 8, 8),
                      num_classes=10)  # fmt: skip
    (tmp_path / "w.bin").write_bytes(b"")
    allowed = r"\(allowed: .pt, .pth, .npz, .safetensors\)"
    with pytest.raises(ExternalModelError, match=r"unknown file type '.bin' " + allowed):
        load_external("mlp", weights=tmp_path / "w.bin", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ExternalModelError, match=r"'weights_layout' applies to .npz files only"):
        load_external("mlp", weights=tmp_path / "mlp.pt", layout="in_out", input_shape=(1, 8, 8), num_classes=10)


def test_factories(tmp_path: Path) -> None:
    kw = {"input_shape": (1, 8, 8), "num_classes": 10}
    tiny = load_external("tiny", factory=f"{__name__}:make_tiny", params={"width": 5}, **kw)
    assert isinstance(tiny, TinyNet) and tiny.body[1].out_features == 5
    torch.save(tiny.state_dict(), tmp_path / "tiny.pt")
    again = load_external(
        "tiny", factory=f"{__name__}:make_tiny", params={"width": 5}, weights=tmp_path / "tiny.pt", **kw
    )
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(again(x), tiny(x))
    with pytest.raises(ExternalModelError, match=r"cannot import module 'no_such_module'"):
        load_external("x", factory="no_such_module:f", **kw)
    with pytest.raises(ExternalModelError, match=r"is a int, not a callable"):
        load_external("x", factory=f"{__name__}:NOT_CALLABLE", **kw)
    with pytest.raises(ExternalModelError, match=r"returned a str, not a torch.nn.Module"):
        load_external("x", factory=f"{__name__}:not_a_model", **kw)
    with pytest.raises(ExternalModelError, match=r"cannot be called with \['depth'\]"):
        load_external("x", factory=f"{__name__}:make_tiny", params={"depth": 2}, **kw)


# -- suites -------------------------------------------------------------------------------------


def _suite(folder: Path, models: str, name: str = "ext") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: {name}
        dataset: {{name: digits, split: test}}
        models:
        {textwrap.indent(models, "  ")}
        attacks: [fgsm]
        epsilons: [0, 0.1]
        tracking: {{enabled: false}}
        """)
    )
    return path


def test_suite_weights_relative_to_suite_file_and_run(tmp_path: Path, lenet_digits: nn.Module, digits_test) -> None:
    from bench.engine import run_suite

    (tmp_path / "suites" / "w").mkdir(parents=True)
    torch.save(lenet_digits.state_dict(), tmp_path / "suites" / "w" / "lenet.pt")
    path = _suite(tmp_path / "suites", "- {name: mine, factory: 'model_zoo.architectures:lenet', weights: w/lenet.pt}")
    suite = load_suite(path)
    assert suite.models[0].weights == str((tmp_path / "suites" / "w" / "lenet.pt").resolve())
    outcome = run_suite(suite, out=tmp_path / "run", limit=120, echo=None)
    info = json.loads((tmp_path / "run" / "models.json").read_text())["mine"]
    with torch.no_grad():
        expected = float((lenet_digits(digits_test.x[:120]).argmax(1) == digits_test.y[:120]).float().mean())
    assert info["clean_accuracy"] == pytest.approx(expected)
    assert info["trained_now"] is False and len(info["weights_sha256"]) == 64
    assert set(outcome.results["model"]) == {"mine"}
    assert outcome.results["clean_accuracy"].iloc[0] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ("- {name: m, factory: 'model_zoo.architectures:lenet', weights: missing.pt}", r"models\[0\].weights: file "),
        ("- {name: m, weights: w.onnx}", r"models\[0\].weights: weights .* unknown file type '.onnx'"),
        (
            "- {name: m, factory: 'nope.mod:f'}",
            r"models\[0\].factory: factory 'nope.mod:f': module 'nope.mod' is not trusted.*--trust nope",
        ),
        ("- {name: nosuch, weights: w.npz}", r"models\[0\].name: unknown model 'nosuch'.*give 'factory"),
        ("- {name: mlp, weights: w.npz, recipe: {epochs: 1}}", r"models\[0\]: recipe: an external model is loaded"),
        ("- {name: mlp, params: {hidden: [5]}}", r"'params' and 'weights_layout' apply to external models"),
        ("- {name: mlp, weights: w.pt, weights_layout: in_out}", r"weights_layout: applies to .npz weights only"),
        ("- {name: mlp, weights: w.npz, weights_layout: rows}", r"models\[0\].weights_layout: allowed values are"),
        ("- {name: 'a/b', factory: 'model_zoo.architectures:mlp'}", r"external model name 'a/b' may contain only"),
    ],
)
def test_suite_external_model_errors(tmp_path: Path, models: str, message: str) -> None:
    (tmp_path / "w.npz").write_bytes(b"")
    (tmp_path / "w.pt").write_bytes(b"")
    with pytest.raises(SuiteError, match=message):
        load_suite(_suite(tmp_path, models))


# -- zoo: mlp3 and cifar_cnn -----------------------------------------------------------------------


def test_mlp3_layers() -> None:
    model = build_model("mlp3", (1, 28, 28), 10)
    sizes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert sizes == [(784, 2048), (2048, 512), (512, 512), (512, 10)]
    assert MODELS.get("mlp3").recipe.optimizer == "adam"


def test_cifar_cnn_shape_and_size() -> None:
    model = build_model("cifar_cnn", (3, 32, 32), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 3 and len(pools) >= 1 and len(linears) == 2
    assert convs[0].in_channels == 3
    assert sum(p.numel() for p in model.parameters()) >= 50_000
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    recipe = MODELS.get("cifar_cnn").recipe
    assert recipe.optimizer == "adam" and recipe.epochs == 10
