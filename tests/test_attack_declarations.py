"""Attacks declare what they can do at registration; the cross-check, minimal eps and the manifest read it.

A throwaway attack registered here, with no other edit anywhere, must appear in
the cross-check matrix and get a minimal eps; it is unregistered afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench.attacks import ATTACKS, Abilities, ArtCounterpart, Attack, attack_record, make_attack
from bench.attacks.fgsm import FGSM
from bench.crosscheck import crosscheck_models, default_pairs, suite_pairs
from bench.engine import run_suite
from bench.minimal_eps import bisect_minimal_eps, supported_attacks
from bench.suite import validate
from bench.types import AttackFamily


@dataclass(frozen=True, kw_only=True)
class TinyFGSM(FGSM):
    """A throwaway FGSM variant, declared with ART's FastGradientMethod as its counterpart."""


def _tiny_to_art(attack: Attack, eps: float) -> tuple[str, dict[str, Any]]:
    return "FastGradientMethod", {
        "norm": attack.norm.value,
        "targeted": attack.targeted,
        "num_random_init": 0,
        "minimal": False,
    }


TINY = Abilities(
    family=AttackFamily.ONE_STEP,
    art=ArtCounterpart(to_art=_tiny_to_art, description="FastGradientMethod(norm, eps, targeted)", tolerance=1e-6),
    minimal_eps="ray",
)


@pytest.fixture
def tiny() -> Iterator[str]:
    with ATTACKS.registered("tiny_fgsm", TinyFGSM, abilities=TINY):
        yield "tiny_fgsm"
    assert "tiny_fgsm" not in ATTACKS


def test_every_registered_attack_declares_its_abilities() -> None:
    for name in ATTACKS.names():
        declared = ATTACKS.abilities(name)
        assert isinstance(declared.family, AttackFamily)
        assert declared.art is not None or declared.no_art
        record = attack_record(name, {})
        assert record["family"] == declared.family.value and record["name"] == name
    assert ATTACKS.abilities("art:DeepFool").family is AttackFamily.EXTERNAL
    assert supported_attacks() == ["fgsm", "bim", "pgd"]


def test_a_throwaway_attack_is_crosschecked_and_gets_minimal_eps(tiny: str, lenet_digits, digits_test, tmp_path):
    pairs = {pair.name: pair for pair in default_pairs()}
    assert {f"{tiny}_linf", f"{tiny}_l2_targeted"} <= set(pairs)
    table = crosscheck_models({"lenet": lenet_digits}, digits_test, pairs=[pairs[f"{tiny}_linf"]], n=32)
    assert len(table) == 2 and table["passed"].all() and (table["max_abs_diff"] == 0).all()

    raw = {
        "name": "throwaway",
        "dataset": {"name": "digits", "n": 40},
        "models": ["lenet"],
        "attacks": [{"name": tiny, "minimal_eps": True}, {"name": "uniform_noise"}],
        "epsilons": [0, 0.1, 0.2],
        "tracking": {"enabled": False},
    }
    suite = validate(raw)
    assert [p.native for p in suite_pairs(suite.attacks, suite.epsilons_for)] == [tiny]
    assert tiny in supported_attacks()

    x, y = digits_test.x[:16], digits_test.y[:16]
    found = bisect_minimal_eps(make_attack(tiny), lenet_digits, x, y, max_eps=0.4, iterations=12)
    same = bisect_minimal_eps(make_attack("fgsm"), lenet_digits, x, y, max_eps=0.4, iterations=12)
    np.testing.assert_array_equal(found, same)

    outcome = run_suite(suite, out=tmp_path / "run", track=False, echo=None)
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    assert samples[samples.attack == tiny]["min_eps"].notna().all()
    assert outcome.manifest["attacks"][tiny]["family"] == "one_step"
    assert outcome.manifest["attacks"][tiny]["minimal_eps"] == "ray"
