"""Any ART evasion attack as a harness attack: ``art:<ClassName>`` in a suite.

Registered like any other attack, as the ``art:`` namespace of :data:`ATTACKS`
(``make_attack("art:DeepFool", max_iter=50)``). ART is a heavy optional
dependency: it is imported inside the functions that need it, never at module level.

The zoo model is wrapped in ART's ``PyTorchClassifier`` (cross-entropy loss
with ``reduction="sum"``, like :meth:`AttackContext.loss_gradient`;
``clip_values`` from the data bounds; ``input_shape`` and ``nb_classes`` from
the batch), the ART class is built by name from ``art.attacks.evasion`` with the
suite's parameters, and labels are **always** passed as ``y`` (one-hot true
labels, or one-hot targets when targeted): without ``y`` ART attacks the
model's *predicted* labels, which silently changes what is measured.

Budget semantics:

* An ART class with both an ``eps`` parameter and a ``norm`` (``np.inf`` or 2)
  is *bounded*: the adapter's norm is ``linf`` or ``l2``, the suite's epsilon
  grid sets ``eps`` (one ART run per eps; eps = 0 returns the input without
  calling ART), and the base class re-projects onto the eps ball.
* Any other class (DeepFool, CarliniLInfMethod, HopSkipJump, ...) is
  *unbounded* (norm ``none``): it runs once per batch, the same adversarial
  inputs are reported at every grid eps, and only the data bounds are enforced.
  Read the perturbation size from the ``mean_linf``/``mean_l2`` columns.

Randomness (ART draws from NumPy's and torch's global generators) is seeded
from the attack context and restored afterwards, so runs are deterministic.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from bench import limits
from bench.attacks.abilities import Abilities
from bench.attacks.base import AttackContext, AttackError, SweepSteps, TargetedAttack, derive_seed
from bench.attacks.registry import ATTACKS
from bench.types import AttackFamily, Bounds, Norm

ART_PREFIX = "art:"

# Parameters the adapter sets itself; a suite may not pass them.
_RESERVED = ("estimator", "classifier", "eps")


@cache
def evasion_attack_names() -> tuple[str, ...]:
    """Names of every ``EvasionAttack`` subclass exported by ``art.attacks.evasion``."""
    # ART is heavy and optional: imported only when an ART attack is named.
    import art.attacks.evasion as evasion
    from art.attacks.attack import EvasionAttack

    return tuple(
        sorted(
            name
            for name in dir(evasion)
            if isinstance(getattr(evasion, name), type) and issubclass(getattr(evasion, name), EvasionAttack)
        )
    )


def art_evasion_class(class_name: str) -> type:
    """The ART evasion attack class ``class_name``; unknown names raise with close matches."""
    # ART is heavy and optional: imported only when an ART attack is named.
    import art.attacks.evasion as evasion

    names = evasion_attack_names()
    if class_name not in names:
        close = difflib.get_close_matches(class_name, names, n=4, cutoff=0.5)
        lowered = [n for n in names if n.lower() == class_name.lower()]
        hint = ", ".join(repr(f"{ART_PREFIX}{c}") for c in dict.fromkeys(lowered + close))
        known = f"did you mean {hint}?" if hint else f"art.attacks.evasion has: {', '.join(names)}"
        raise AttackError(f"unknown ART evasion attack {ART_PREFIX + class_name!r}; {known}")
    return getattr(evasion, class_name)  # type: ignore[no-any-return]


def _init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    return {k: v for k, v in params.items() if v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)}


class CountingClassifier:
    """Factory of a ``PyTorchClassifier`` subclass that counts per-sample forward and gradient evaluations."""

    _cls: ClassVar[type | None] = None

    @classmethod
    def get(cls) -> type:
        if cls._cls is None:
            # ART is heavy and optional: imported only when an ART attack runs.
            from art.estimators.classification import PyTorchClassifier

            class _Counting(PyTorchClassifier):  # type: ignore[misc]
                ctx: AttackContext | None = None

                def predict(self, x: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
                    if self.ctx is not None:
                        self.ctx.forward_evals += len(x)
                    return super().predict(x, *args, **kwargs)

                def loss_gradient(self, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
                    if self.ctx is not None:
                        self.ctx.grad_evals += len(x)
                    return super().loss_gradient(x, y, *args, **kwargs)

                def class_gradient(self, x: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
                    if self.ctx is not None:
                        self.ctx.grad_evals += len(x)
                    return super().class_gradient(x, *args, **kwargs)

            cls._cls = _Counting
        return cls._cls


def art_classifier(
    model: nn.Module,
    *,
    input_shape: tuple[int, ...],
    nb_classes: int,
    bounds: Bounds = Bounds(),
    device: torch.device | str = "cpu",
    ctx: AttackContext | None = None,
) -> Any:
    """ART ``PyTorchClassifier`` around ``model`` (logits in, pixel space ``bounds`` in).

    The loss is ``CrossEntropyLoss(reduction="sum")``, matching the native
    attacks: with ART's usual ``mean`` each gradient is divided by the batch
    size, which turns tiny gradients into exact zeros (sign 0) more often.
    No preprocessing: the zoo models normalize inside themselves.
    """
    device = torch.device(device)
    classifier = CountingClassifier.get()(
        model=model,
        loss=nn.CrossEntropyLoss(reduction="sum"),
        input_shape=tuple(input_shape),
        nb_classes=int(nb_classes),
        clip_values=(float(bounds.low), float(bounds.high)),
        channels_first=True,
        # ART moves the model to its own device: it must be the one the model is on.
        device_type="gpu" if device.type == "cuda" else "cpu",
    )
    classifier.ctx = ctx
    return classifier


@cache
def _validation_classifier() -> Any:
    """A tiny real classifier used only to let ART validate parameters (``_check_params``)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    return art_classifier(model.eval(), input_shape=(1, 2, 2), nb_classes=3)


def _art_norm(value: Any) -> Norm:
    """ART's ``norm`` (``np.inf``, ``"inf"``, 2, ...) as a harness :class:`Norm`; other norms raise."""
    if isinstance(value, str) and value.lower() in ("inf", "linf", "np.inf"):
        return Norm.LINF
    if isinstance(value, str) and value.lower() in ("2", "l2"):
        return Norm.L2
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value == np.inf:
            return Norm.LINF
        if value == 2:
            return Norm.L2
    raise AttackError(f"norm {value!r} is not supported by the harness (allowed: inf, 'linf', 2, 'l2')")


def _to_art_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Suite values -> ART values: norms written as ``linf``/``l2``/``inf`` become ``np.inf``/2."""
    out = dict(options)
    if "norm" in out:
        out["norm"] = np.inf if _art_norm(out["norm"]) is Norm.LINF else 2
    return out


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed NumPy's and torch's global generators (which ART uses) and restore them afterwards."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


@dataclass(frozen=True, kw_only=True)
class ArtAttack(TargetedAttack):
    """An ART evasion attack run through a ``PyTorchClassifier`` wrapper of the model.

    Args:
        attack_class: name of the class in ``art.attacks.evasion`` (e.g. "DeepFool").
        options: the ART constructor's keyword arguments (not ``estimator``
            and not ``eps``, which comes from the epsilon grid). ``norm`` may be
            written ``inf``/``linf``/``2``/``l2``. Defaults the adapter adds when
            absent: ``verbose=False``, ``batch_size`` = the harness batch.
        target_mode: how targets are chosen when ``targeted: true`` is among the
            options: "random" (default), "least_likely" or "given".

    ``norm`` and ``targeted`` are derived from the options (see the module docstring).
    """

    name: ClassVar[str] = "art"

    attack_class: str
    options: Mapping[str, Any] = field(default_factory=dict)
    norm: Norm = Norm.NONE

    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.LINF, Norm.L2, Norm.NONE)

    def __post_init__(self) -> None:
        cls = art_evasion_class(self.attack_class)
        accepted = _init_parameters(cls)
        label = f"{ART_PREFIX}{self.attack_class}"
        settable = sorted(k for k in accepted if k not in _RESERVED)
        for key in self.options:
            if key in _RESERVED:
                why = "comes from the suite's epsilons" if key == "eps" else "is the wrapped zoo model"
                raise AttackError(f"{label}: parameter {key!r} is set by the harness ({why})")
            if key not in accepted:
                raise AttackError(
                    f"{label} has no parameter {key!r} (allowed: {', '.join([*settable, 'target_mode'])})"
                )
            problem = limits.work_problem(key, self.options[key])
            if problem is not None:
                raise AttackError(f"{label}: {problem}")
        try:
            instance = self.build(_validation_classifier(), eps=None)
            norm = _art_norm(instance.norm) if "eps" in accepted and hasattr(instance, "norm") else Norm.NONE
        except AttackError as exc:
            raise AttackError(f"{label}: {exc}" if not str(exc).startswith(label) else str(exc)) from None
        object.__setattr__(self, "norm", norm)
        object.__setattr__(self, "targeted", bool(getattr(instance, "targeted", False)))
        object.__setattr__(self, "options", dict(self.options))
        super().__post_init__()

    def check_params(self) -> None:
        if self.target_mode not in ("random", "least_likely", "given"):
            raise AttackError(
                f"{ART_PREFIX}{self.attack_class}: target_mode {self.target_mode!r} is not allowed "
                "(allowed: random, least_likely, given)"
            )

    def build(self, classifier: Any, *, eps: float | None, batch_size: int | None = None) -> Any:
        """The ART attack object on ``classifier`` with ``eps`` (bounded attacks) set."""
        cls = art_evasion_class(self.attack_class)
        accepted = _init_parameters(cls)
        kwargs = _to_art_options(self.options)
        if "verbose" in accepted:
            kwargs.setdefault("verbose", False)
        if batch_size is not None and "batch_size" in accepted:
            kwargs.setdefault("batch_size", batch_size)
        if eps is not None and "eps" in accepted:
            kwargs["eps"] = float(eps)
            # ART wants eps and eps_step of one type; a suite may write eps_step: 1
            if isinstance(kwargs.get("eps_step"), int) and not isinstance(kwargs["eps_step"], bool):
                kwargs["eps_step"] = float(kwargs["eps_step"])
        first = next(iter(accepted))  # "estimator" or "classifier", by ART class
        try:
            return cls(**{first: classifier}, **kwargs)
        except (ValueError, TypeError) as exc:
            raise AttackError(f"{ART_PREFIX}{self.attack_class}: ART rejected the parameters: {exc}") from None
        except Exception as exc:  # ART's EstimatorError and the like: the attack cannot use a classifier
            raise AttackError(f"{ART_PREFIX}{self.attack_class}: cannot run on an image classifier: {exc}") from None

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"attack_class": self.attack_class}
        for key, value in sorted(self.options.items()):
            out[key] = value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
        out["norm"] = self.norm.value
        out["targeted"] = self.targeted
        if self.targeted:
            out["target_mode"] = self.target_mode
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items() if k != "attack_class")
        return f"{ART_PREFIX}{self.attack_class}({args})"

    # -- running ---------------------------------------------------------------------------
    def generate(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float | None,
        *,
        target: torch.Tensor | None,
        bounds: Bounds,
        ctx: AttackContext,
    ) -> torch.Tensor:
        """ART's raw output for one eps (``None`` for unbounded attacks), before the base class' checks.

        ``x``: ``(N, C, H, W)`` in ``bounds``; ``y``, ``target``: int64 ``(N,)``.
        """
        nb_classes = int(ctx.logits(model, x[:1]).shape[1])
        classifier = art_classifier(
            model, input_shape=tuple(x.shape[1:]), nb_classes=nb_classes, bounds=bounds, device=x.device, ctx=ctx
        )
        attack = self.build(classifier, eps=eps, batch_size=int(x.shape[0]))
        labels = target if self.targeted else y
        if labels is None:
            raise AttackError(f"{self!r}: a targeted ART attack needs target classes")
        one_hot = np.eye(nb_classes, dtype=np.float32)[labels.cpu().numpy()]
        with _seeded(derive_seed(ctx.seed, self.attack_class, eps)):
            x_adv = attack.generate(x=x.detach().cpu().numpy().astype(np.float32), y=one_hot)
        return torch.as_tensor(np.asarray(x_adv, dtype=np.float32)).to(device=x.device, dtype=x.dtype)

    def run_sweep(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        epsilons: Sequence[float],
        *,
        target: torch.Tensor | None,
        bounds: Bounds,
        ctx: AttackContext,
    ) -> SweepSteps:
        # ART clips to clip_values (the bounds) inside the algorithm.
        if not self.bounded:
            x_adv = self.generate(model, x, y, None, target=target, bounds=bounds, ctx=ctx)
            for eps in epsilons:
                yield eps, x_adv
            return None
        for eps in epsilons:
            if eps == 0:
                yield eps, x
                continue
            yield eps, self.generate(model, x, y, eps, target=target, bounds=bounds, ctx=ctx)
        return None


def make_art_attack(name: str, **params: Any) -> ArtAttack:
    """``make_attack("art:DeepFool", max_iter=50)``: split our ``target_mode`` from ART's options."""
    class_name = name.removeprefix(ART_PREFIX)
    if not class_name:
        raise AttackError(f"attack {name!r}: give an ART class after 'art:', e.g. 'art:DeepFool'")
    target_mode = params.pop("target_mode", "random")
    return ArtAttack(attack_class=class_name, options=params, target_mode=target_mode)


def _check_art_name(name: str) -> None:
    class_name = name.removeprefix(ART_PREFIX)
    if not class_name:
        raise AttackError(f"attack {name!r}: give an ART class after 'art:', e.g. 'art:DeepFool'")
    art_evasion_class(class_name)


ATTACKS.register_attack_namespace(
    ART_PREFIX,
    ArtAttack,
    make=make_art_attack,
    validate=_check_art_name,
    abilities=Abilities(family=AttackFamily.EXTERNAL, no_art="it is ART itself"),
)
