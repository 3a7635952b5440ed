"""Adversarial training (``model_zoo/adversarial.py``): robustness gained on a real run, recipe validation, cache keys.

The robustness tests train the zoo's ``mlp`` on ``digits`` (8x8, 1,437 training images) through the zoo's own
cache, once with the standard recipe and once with PGD-AT (or TRADES) at eps 0.2, and attack both with the
harness's PGD-20 at the same eps on 200 test images (one sample = 0.005). Digits has no reference weights:
these really train (seed 0), and a model retrained on another CPU lands elsewhere, so each threshold is a
measured spread's minimum minus a margin, as in ``tests/test_zoo.py::test_training_floor_on_digits``.

Measured (torch 2.14.1, Intel Xeon with AVX-512): ``get_model("mlp", "digits", seed=s, recipe=...,
weights="retrain")`` into an empty BENCH_CACHE for seeds 0..4 at ``torch.set_num_threads`` 1 and 2 (equal
results), plus seed 0 at 1 and 2 threads with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``. sd: sample
sd (n-1) of the 5 seeds; min over every run; margin max(0.03, 3 sd); threshold min - margin rounded down to 0.01:

==========================  =============================  ===========  =====  ======  =========
quantity                    seeds 0..4                     AVX2 (1/2)   min    sd      threshold
==========================  =============================  ===========  =====  ======  =========
standard PGD-20 robust      0.045 0.040 0.060 0.045 0.045  0.045        0.040  0.0076
PGD-AT gain over standard   0.545 0.560 0.555 0.550 0.560  0.550        0.545  0.0065  0.51
TRADES gain over standard   0.555 0.590 0.515 0.535 0.570  0.565/0.575  0.515  0.0293  0.42
PGD-AT clean (360 digits)   0.972 0.975 0.969 0.964 0.975  0.967        0.964  0.0046  0.93
==========================  =============================  ===========  =====  ======  =========
"""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
import yaml

from bench import progress
from bench.attacks.context import AttackContext
from bench.attacks.pgd import PGD
from bench.cli import overrides
from bench.data import load_dataset
from bench.suite import SuiteError, validate
from bench.types import Bounds
from model_zoo import MODELS, Recipe, accuracy, get_model
from model_zoo.adversarial import AdversarialLoss
from model_zoo.reference import reference_for
from model_zoo.training import cache_key, train
from tests.conftest import trained

EPS = 0.2
AT_RECIPE = {"adv": "pgd", "adv_eps": EPS, "adv_steps": 3, "adv_rel_step_size": 0.5}
ROBUST_GAIN = 0.51
"""PGD-AT must beat standard training's PGD-20 robust accuracy by at least this much (measured min +0.545)."""
TRADES_GAIN = 0.42
"""The same for TRADES (measured min +0.515, sd 0.029 across seeds: a wider margin)."""
AT_CLEAN_FLOOR = 0.93
"""PGD-AT's clean accuracy on the 360 test digits (measured min 0.964)."""


def _robust_accuracy(model: torch.nn.Module, data) -> float:
    x, y = data.x[:200], data.y[:200]
    x_adv = PGD(steps=20)(model, x, y, EPS, bounds=data.bounds, ctx=AttackContext(seed=1))
    return accuracy(model, x_adv, y, device=torch.device("cpu"))


def test_pgd_training_raises_robust_accuracy_over_standard_training(digits_test) -> None:
    standard = _robust_accuracy(trained("mlp", "digits"), digits_test)
    robust_model = trained("mlp", "digits", **AT_RECIPE)
    robust = _robust_accuracy(robust_model, digits_test)
    assert robust >= standard + ROBUST_GAIN, f"PGD-AT robust {robust:.3f} vs standard {standard:.3f} at eps {EPS}"
    assert accuracy(robust_model, digits_test.x, digits_test.y, device=torch.device("cpu")) >= AT_CLEAN_FLOOR


def test_trades_training_raises_robust_accuracy_over_standard_training(digits_test) -> None:
    standard = _robust_accuracy(trained("mlp", "digits"), digits_test)
    robust = _robust_accuracy(trained("mlp", "digits", **{**AT_RECIPE, "adv": "trades", "adv_beta": 6.0}), digits_test)
    assert robust >= standard + TRADES_GAIN, f"TRADES robust {robust:.3f} vs standard {standard:.3f} at eps {EPS}"


def test_checkpoint_metadata_and_progress_report_clean_and_adversarial_accuracy(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))  # an empty cache: this test always trains
    data = load_dataset("digits", "train")
    out = io.StringIO()
    with progress.active(progress.Progress(stream=out, tty=False, interval=0)):
        model = get_model("mlp", "digits", train=data, recipe={**AT_RECIPE, "epochs": 2})
    assert model.trained_now
    for key in ("seconds", "train_accuracy", "adv_train_accuracy"):
        assert isinstance(model.info[key], float), key
    assert model.info["seconds"] > 0
    assert model.info["adv_train_accuracy"] < model.info["train_accuracy"]
    assert model.info["recipe"]["adv"] == "pgd" and model.info["recipe"]["adv_eps"] == EPS
    lines = [line for line in out.getvalue().splitlines() if "epoch 2/2" in line]
    assert lines and "train accuracy" in lines[0] and "adversarial" in lines[0], out.getvalue()


def test_inner_maximisation_is_the_harness_pgd_with_a_ramp() -> None:
    loss = AdversarialLoss(
        mode="pgd", eps=0.3, norm="linf", steps=7, rel_step_size=0.25, ramp_epochs=2, beta=6.0, bounds=Bounds(), seed=0
    )
    attack = loss.attack
    assert isinstance(attack, PGD) and attack.random_start and not attack.early_stop
    assert (attack.steps, attack.rel_step_size) == (7, 0.25)
    assert loss.eps_at(0, 0, 10) == pytest.approx(0.3 / 20)
    assert loss.eps_at(0, 9, 10) == pytest.approx(0.15)
    assert loss.eps_at(1, 9, 10) == pytest.approx(0.3)
    assert loss.eps_at(5, 3, 10) == 0.3


def test_adversarial_training_is_deterministic_for_a_seed() -> None:
    data = load_dataset("digits", "train")
    x, y = data.x[:256], data.y[:256]
    recipe = Recipe(epochs=1, batch_size=64, adv="pgd", adv_eps=0.1, adv_steps=2)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = MODELS.get("mlp").factory(data.input_shape, data.num_classes)
        train(model, x, y, recipe, seed=3, device=torch.device("cpu"))
        states.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(states[0], states[1])


@pytest.mark.parametrize(
    ("changes", "field", "allowed"),
    [
        ({"adv": "fgsm"}, "adv", "none, pgd, trades"),
        ({"adv": "pgd", "adv_eps": 0.0}, "adv_eps", "> 0"),
        ({"adv": "pgd", "adv_eps": 0.1, "adv_steps": 0}, "adv_steps", ">= 1"),
        ({"adv": "pgd", "adv_eps": 0.1, "adv_rel_step_size": -1.0}, "adv_rel_step_size", "> 0"),
        ({"adv": "pgd", "adv_eps": 0.1, "adv_ramp_epochs": 6}, "adv_ramp_epochs", "from 0 to epochs (5)"),
        ({"adv": "trades", "adv_eps": 0.1, "adv_beta": 0.0}, "adv_beta", "> 0"),
        ({"adv": "pgd", "adv_eps": 0.1, "adv_norm": "l1"}, "adv_norm", "linf, l2"),
        ({"adv_eps": 0.3}, "adv_eps", "adv: pgd"),
    ],
)
def test_recipe_field_errors_name_the_field(changes: dict, field: str, allowed: str) -> None:
    with pytest.raises(ValueError, match=f"recipe field {field}:") as info:
        Recipe().replace(**changes)
    assert allowed in str(info.value)


def test_set_override_of_an_adversarial_field_is_validated() -> None:
    raw = yaml.safe_load(
        "name: at\ndataset: {name: mnist5k, n: 10}\nmodels: [lenet_at]\nattacks: [{name: pgd}]\nepsilons: [0.1]\n"
    )
    suite = validate(overrides.apply(raw, ["models.lenet_at.recipe.adv_eps=0.3"], source="at.yaml"), source="at.yaml")
    assert suite.models[0].recipe == {"adv_eps": 0.3}
    bad = overrides.apply(raw, ["models.lenet_at.recipe.adv_eps=-1"], source="at.yaml")
    with pytest.raises(SuiteError, match=r"at\.yaml: models\[0\]\.recipe: recipe field adv_eps: must be"):
        validate(bad, source="at.yaml")
    wrong_type = overrides.apply(raw, ["models.lenet_at.recipe.adv_steps=ten"], source="at.yaml")
    with pytest.raises(SuiteError, match=r"models\[0\]\.recipe\.adv_steps"):
        validate(wrong_type, source="at.yaml")


ORIGINAL_FIELDS = ("optimizer", "lr", "momentum", "weight_decay", "epochs", "batch_size", "schedule")
"""The recipe fields before adversarial training existed: a standard recipe's key is computed from these alone."""


@pytest.mark.parametrize("name", ["mlp", "lenet", "cnn", "convnet", "convnet_bn", "mlp3", "cifar_cnn"])
def test_standard_recipe_cache_keys_are_unchanged(name: str) -> None:
    recipe = MODELS.get(name).recipe
    old = {f: getattr(recipe, f) for f in ORIGINAL_FIELDS}
    assert recipe.as_dict() == old
    parts = {"arch": name, "dataset": "mnist5k", "data": "d", "shape": [1, 28, 28], "classes": 10, "seed": 0}
    assert cache_key(**parts, recipe=recipe.as_dict()) == cache_key(**parts, recipe=old)


def test_lenet_mnist5k_key_is_the_one_of_existing_caches() -> None:
    """The key of lenet's checkpoint on mnist5k before this change (a literal: caches on disk stay valid)."""
    train_split = load_dataset("mnist5k", "train")
    key = cache_key(
        arch="lenet",
        dataset="mnist5k",
        data=train_split.digest,
        shape=list(train_split.input_shape),
        classes=train_split.num_classes,
        recipe=MODELS.get("lenet").recipe.as_dict(),
        seed=0,
    )
    assert key == "2a2e2bece54150dc"


def test_adversarial_recipes_key_every_adversarial_field() -> None:
    base = MODELS.get("lenet_at").recipe
    assert base.adv == "pgd"
    keys = {
        cache_key(recipe=base.replace(**{f.name: change}).as_dict())
        for f, change in zip(
            [f for f in dataclasses.fields(Recipe) if f.name.startswith("adv_") and f.name != "adv_kappa_end"],
            [0.25, "l2", 5, 0.3, 1, 3.0],
            strict=True,
        )
    }
    assert len(keys) == 6 and cache_key(recipe=base.as_dict()) not in keys
    # certified training keys its own field too; an adversarial recipe refuses it (it would be ignored)
    certified = MODELS.get("lenet_crown").recipe
    assert cache_key(recipe=certified.replace(adv_kappa_end=0.2).as_dict()) != cache_key(recipe=certified.as_dict())
    with pytest.raises(ValueError, match="adv_kappa_end: set, but adv is 'pgd'"):
        base.replace(adv_kappa_end=0.2)


@pytest.mark.slow
def test_lenet_at_meets_the_issue_floors_on_mnist5k(mnist_test) -> None:
    """Issue #15's floors for ``lenet_at``: clean >= 0.85 and PGD-40 (5 restarts) robust >= 0.50 at eps 0.2.

    On the shipped reference weights (a model retrained here would land elsewhere on another CPU): clean
    accuracy on the 1,000 test digits is the one ``index.json`` records (0.967), within one sample;
    PGD-40 with 5 restarts on the first 500 measured 0.668 when the reference was made, far above the floor.
    The attack, not training (about 25 min on a loaded 2-core machine), is what is left of ``slow``.
    """
    model = get_model("lenet_at", "mnist5k", train=load_dataset("mnist5k", "train"))
    assert model.weights == "reference", model.weights_note
    entry = reference_for(model.key)
    assert entry is not None and entry.clean_accuracy is not None
    clean = accuracy(model.model, mnist_test.x, mnist_test.y, device=torch.device("cpu"))
    assert clean == pytest.approx(entry.clean_accuracy, abs=1e-3) and clean >= 0.85
    x, y = mnist_test.x[:500], mnist_test.y[:500]
    x_adv = PGD(steps=40, restarts=5)(model.model, x, y, 0.2, bounds=mnist_test.bounds, ctx=AttackContext(seed=1))
    assert accuracy(model.model, x_adv, y, device=torch.device("cpu")) >= 0.50
