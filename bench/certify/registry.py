"""The ``CERTIFIERS`` registry: certifier classes with their declarations (norms, layers, ART counterpart)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from bench.certify.base import Certifier
from bench.certify.chain import CertifyError
from bench.certify.crown import CROWN_LAYERS, Crown
from bench.certify.ibp import IBP, IBP_LAYERS
from bench.certify.smoothing import Smoothing
from bench.registry import Registry


@dataclass(frozen=True, kw_only=True)
class CertifierAbilities:
    """What a certifier declares.

    Attributes:
        kind: ``bound`` (a deterministic proof for the model itself: an attack of the same run that breaks a
            certified sample is a certifier bug) or ``smoothed`` (a probabilistic certificate for the smoothed
            classifier, which attacks on the base model do not contradict).
        layers: the layer types it bounds (``any`` for smoothing, which only runs the model).
        art: its ART counterpart and how the cross-check compares them.
    """

    kind: Literal["bound", "smoothed"]
    layers: tuple[str, ...]
    art: str


CERTIFIERS: Registry[type[Certifier]] = Registry("certifier")


def _layers(types: tuple[type, ...]) -> tuple[str, ...]:
    return tuple(sorted({t.__name__ for t in types}))


CERTIFIERS.register(
    "ibp",
    IBP,
    abilities=CertifierAbilities(
        kind="bound",
        layers=_layers(IBP_LAYERS),
        art="PyTorchIBPClassifier.predict_intervals: logit bounds equal to 1e-5 on a Conv2d/Linear/ReLU network",
    ),
)
CERTIFIERS.register(
    "crown",
    Crown,
    abilities=CertifierAbilities(
        kind="bound",
        layers=_layers(CROWN_LAYERS),
        art="PytorchDeepZ.certify: crown certifies every sample DeepZ certifies on a Conv2d/Linear/ReLU network",
    ),
)
CERTIFIERS.register(
    "smoothing",
    Smoothing,
    abilities=CertifierAbilities(
        kind="smoothed",
        layers=("any",),
        art="PyTorchRandomizedSmoothing.certify (same sigma, n, alpha): the same class for >= 99% of samples, "
        "radii within Monte Carlo noise",
    ),
)


def certifier_abilities(name: str) -> CertifierAbilities:
    CERTIFIERS.check(name)
    return CERTIFIERS.meta(name)["abilities"]


def make_certifier(name: str, **params: Any) -> Certifier:
    """The registered certifier ``name`` with keyword parameters; unknown names or parameters name the allowed."""
    try:
        cls = CERTIFIERS.get(name)
    except LookupError:
        raise CertifyError(f"unknown certifier {name!r} (known: {', '.join(CERTIFIERS.names())})") from None
    allowed = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise CertifyError(f"certifier {name!r} has no parameter {unknown[0]!r} (allowed: {', '.join(allowed)})")
    try:
        return cls(**params)
    except TypeError as exc:
        raise CertifyError(f"certifier {name!r}: {exc}") from None
