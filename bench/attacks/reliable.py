"""``reliable``: an AutoAttack-style ensemble (Croce & Hein, ICML 2020), the harness's headline robust accuracy.

The preset runs its members per sample, cheapest first, and hands each member
only the samples every earlier member failed on (at this eps and every smaller
one): a sample is broken as soon as one member fools it, and its example is the
one that broke it. The default members are the standard version of AutoAttack
without FAB:

========  ======================================================  =====================================
member    attack                                                  default budget
========  ======================================================  =====================================
apgd      ``apgd``, the cross-entropy loss (APGD-CE)              100 steps, 1 restart
apgd_t    ``apgd_t``, targeted DLR loss over the top classes      100 steps, 9 target classes
square    ``square`` (native, black box; L2: ``art:SquareAttack``)  5,000 queries, 1 restart, p_init 0.8
========  ======================================================  =====================================

Any registered attack name (``pgd``, ``fgsm``, ``art:DeepFool`` ...) may be a
member too, with its own defaults; ``member_params`` overrides a member's
hyperparameters. ``norm`` is passed to every member.

Sweep convention: epsilons are attacked in ascending order and a sample broken
at a smaller eps stays broken (its example lies in every larger ball), so the
curve is monotone and a sample costs nothing once broken.

Extras (``Sweep.extras``): ``per_sample`` ``{"broken_by": [[label per sample] per eps]}``
(the member that broke the sample at this eps or a smaller one, ``"clean"`` if the
model got it wrong unattacked, ``""`` if still robust), which the engine writes as
the ``broken_by`` column of ``samples.parquet`` and counts per member in the cell's
extras; ``attacked``: per eps label, how many samples each member was handed; and
``seconds``: the time each member took (all epsilons).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from bench.attacks.abilities import Abilities, ArtCounterpart
from bench.attacks.base import Attack, AttackContext, AttackError, SweepSteps, derive_seed
from bench.attacks.registry import ATTACKS, make_attack
from bench.types import AttackFamily, Bounds, Norm, eps_label

MEMBER_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "apgd": ("apgd", {"loss": "ce", "steps": 100, "restarts": 1}),
    "apgd_t": ("apgd_t", {"n_target_classes": 9, "steps": 100}),
    "square": ("square", {"max_iter": 5000, "p_init": 0.8}),
}
"""Member name -> (registered attack, default hyperparameters); any other name is a registered attack.
In L2, ``square`` is ART's ``SquareAttack`` (:data:`L2_SQUARE`): the native one is Linf only."""

L2_SQUARE = ("art:SquareAttack", {"max_iter": 5000, "nb_restarts": 1, "p_init": 0.8})

DEFAULT_MEMBERS = ("apgd", "apgd_t", "square")
"""AutoAttack's standard ensemble without FAB, in order of cost."""

CLEAN = "clean"
"""``broken_by`` of a sample the model misclassifies without attack."""


def _reliable_to_art(attack: Attack, eps: float) -> tuple[str, dict[str, Any]]:
    """ART's ``AutoAttack`` with its standard attacks (APGD-CE, APGD-DLR, DeepFool, Square) at our norm."""
    return "AutoAttack", {"norm": attack.norm.value}


def _always(attack: Attack) -> bool:
    return True


@ATTACKS.register(
    "reliable",
    abilities=Abilities(
        family=AttackFamily.ITERATIVE,
        art=ArtCounterpart(
            to_art=_reliable_to_art,
            description=(
                "AutoAttack(norm=np.inf|2, eps=eps) with ART's standard attacks (APGD-CE and APGD-DLR, 100 steps x "
                "5 restarts each, DeepFool, Square 5,000 queries x 5 restarts); judged by a paired test "
                "(both ensembles are randomized)."
            ),
            tolerance=0.0,
            stochastic=_always,
            in_default_matrix=False,
        ),
    ),
)
@dataclass(frozen=True, kw_only=True)
class Reliable(Attack):
    """The reliable-evaluation preset: members run per sample in order, each on the samples still robust.

    Args:
        norm: "linf" (default) or "l2", passed to every member.
        members: member names, in the order they run (cheapest first); a name of
            :data:`MEMBER_PRESETS` (``apgd``, ``apgd_t``, ``square``) or any
            registered attack (``pgd``, ``fgsm``, ``art:DeepFool`` ...). Default
            :data:`DEFAULT_MEMBERS` (apgd, apgd_t, square).
        member_params: per member, hyperparameters that override its defaults
            (``{"square": {"max_iter": 1000}}``); ``norm`` is set by the preset.

    Cost: each member's cost on the samples still robust when its turn comes, per
    eps; a sample broken at a smaller eps is not attacked again.
    """

    pooled: ClassVar[bool] = True

    members: Sequence[str] = DEFAULT_MEMBERS
    member_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.LINF, Norm.L2)

    def check_params(self) -> None:
        if isinstance(self.members, str) or not isinstance(self.members, Sequence) or not self.members:
            raise AttackError(f"reliable: members must be a non-empty list of attack names, got {self.members!r}")
        object.__setattr__(self, "members", tuple(self.members))
        if len(set(self.members)) != len(self.members):
            raise AttackError(f"reliable: members must be distinct, got {list(self.members)}")
        if not isinstance(self.member_params, Mapping):
            raise AttackError(f"reliable: member_params must map members to parameters, got {self.member_params!r}")
        unknown = sorted(set(self.member_params) - set(self.members))
        if unknown:
            raise AttackError(
                f"reliable: member_params names {', '.join(map(repr, unknown))}, not a member "
                f"(members: {', '.join(self.members)})"
            )
        object.__setattr__(self, "member_params", {k: dict(v) for k, v in self.member_params.items()})
        self.built_members()  # every member must build: unknown names and bad parameters fail here, in one line

    def built_members(self) -> list[tuple[str, Attack]]:
        """``(label, attack)`` of each member, in order, with ``norm`` set."""
        built = []
        for label in self.members:
            if not isinstance(label, str) or label == self.name:
                raise AttackError(f"reliable: member {label!r} is not allowed (an attack name other than 'reliable')")
            name, defaults = MEMBER_PRESETS.get(label, (label, {}))
            if name not in ATTACKS and ATTACKS.namespace_of(name) is None:
                # a registered name or a namespaced one (art:...); never "module:attr", which would be imported
                allowed = ", ".join(a for a in ATTACKS.names() if a != self.name)
                raise AttackError(
                    f"reliable: member {label!r} is not a registered attack (allowed: {allowed}, or art:<ClassName>); "
                    "members are never imported from modules"
                )
            if label == "square" and self.norm is Norm.L2:
                name, defaults = L2_SQUARE
            given = dict(self.member_params.get(label, {}))
            if "norm" in given:
                raise AttackError(f"reliable: member_params.{label}.norm is set by the preset (use reliable's norm)")
            try:
                member = make_attack(name, **{**defaults, **given, "norm": self.norm.value})
            except (AttackError, KeyError, LookupError) as exc:
                raise AttackError(f"reliable: member {label!r}: {exc}") from None
            if member.targeted:
                raise AttackError(f"reliable: member {label!r} is targeted; the preset counts untargeted success")
            if not member.bounded:
                raise AttackError(f"reliable: member {label!r} is unbounded; every member must respect eps")
            built.append((label, member))
        return built

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
        members = self.built_members()
        labels = [label for label, _ in members]
        n = int(x.shape[0])
        broken = ctx.logits(model, x).argmax(1) != y  # cumulative: fooled at this eps or a smaller one
        by = torch.where(broken, -1, -2).cpu()  # -1: clean misclassified, -2: robust, m: members[m]
        best = x.clone()
        done: dict[int, tuple[torch.Tensor, list[str]]] = {}
        attacked: dict[str, dict[str, int]] = {}
        seconds = dict.fromkeys(labels, 0.0)
        order = sorted(range(len(epsilons)), key=lambda i: epsilons[i])
        next_out = 0
        for i in order:
            eps = float(epsilons[i])
            counts = attacked.setdefault(eps_label(eps), {})
            for m, (label, member) in enumerate(members):
                todo = (~broken).nonzero().squeeze(1)
                counts[label] = int(todo.numel()) if eps > 0 else 0
                if eps == 0 or todo.numel() == 0:
                    continue
                tick = time.perf_counter()
                mctx = AttackContext(seed=derive_seed(ctx.seed, "reliable", label, eps), batch_size=ctx.batch_size)
                ((_, adv),) = list(member.sweep(model, x[todo], y[todo], [eps], bounds=bounds, ctx=mctx))
                ctx.grad_evals += mctx.grad_evals
                ctx.forward_evals += mctx.forward_evals
                fooled = ctx.logits(model, adv).argmax(1) != y[todo]
                hit = todo[fooled]
                best[hit] = adv[fooled]
                broken[hit] = True
                by[hit.cpu()] = m
                seconds[label] += time.perf_counter() - tick
            done[i] = (best.clone(), [_label(int(v), labels) for v in by])
            while next_out in done:  # yield in the order asked, as soon as each is ready
                yield epsilons[next_out], done[next_out][0]
                next_out += 1
        per_eps = [done[i][1] for i in range(len(epsilons))]
        assert len(per_eps) == len(epsilons) and all(len(p) == n for p in per_eps)
        return {"per_sample": {"broken_by": per_eps}, "attacked": attacked, "members": labels, "seconds": seconds}


def _label(code: int, labels: list[str]) -> str:
    if code == -1:
        return CLEAN
    if code == -2:
        return ""
    return labels[code]
