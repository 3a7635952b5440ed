"""Per-call state of an attack: seeded randomness, batched model calls and cost counters."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


class AttackError(ValueError):
    """Bad attack parameters or inputs, or an attack that broke its contract."""


def check_count(name: str, field: str, value: object, *, unit: str = "") -> None:
    """Raise :class:`AttackError` unless ``value`` is an integer >= 1 (a bool is refused), naming attack and field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        where = f" ({unit})" if unit else ""
        raise AttackError(f"{name}: {field} must be an integer >= 1{where}, got {value!r}")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from any JSON-able parts (suite seed, model, attack, eps...)."""
    digest = hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class AttackContext:
    """Per-call state an attack may use: seeded randomness and cost counters.

    Random numbers are drawn on the CPU from generators seeded by
    ``(seed, *key)`` and then moved to the device, so CPU and CUDA runs draw the
    same noise. The context carries no results: bounds come in as arguments and
    extras go out through :class:`~bench.attacks.base.Sweep`.

    Attributes:
        seed: base seed (normally derived from suite seed, model and attack).
        grad_evals: number of per-sample input gradients computed so far.
        forward_evals: number of per-sample forward passes so far.
        batch_size: the most samples one model call may take; :meth:`logits` and
            :meth:`loss_gradient` split larger inputs (``None``: never split). A
            pooled attack (:attr:`~bench.attacks.base.Attack.pooled`) can then be
            handed many batches at once.
        gradient_logits: the model's logits computed under autograd equal its
            inference logits bit for bit (the runner checks this per model:
            ``gradient_logits_exact`` in ``models.json``), so the logits a
            :meth:`loss_gradient` at the clean input computes anyway stand for
            its clean pass. Default ``False``: only inference passes are reused.

    The logits of the *clean input* (the ``x`` a sweep was called with,
    :meth:`track_clean`) are computed once per context: a sweep yields that very
    tensor at eps 0, and the caller's clean pass and eps-0 scoring then share
    one forward pass (or none, with ``gradient_logits``). A tensor counts as the
    clean input while it views the same memory with the same shape and strides
    and has not been written in place by torch since (writes through NumPy views
    or ``.data`` are invisible to torch's write counter: do not make them while a
    context is in use). A context keeps its last clean input alive until dropped.
    """

    seed: int = 0
    grad_evals: int = 0
    forward_evals: int = 0
    batch_size: int | None = None
    gradient_logits: bool = False
    _clean_key: tuple[object, ...] | None = field(default=None, init=False, repr=False, compare=False)
    _clean_input: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    # per model (an attack may differentiate a wrapper of the scored model): id -> (model, logits)
    _clean_logits: dict[int, tuple[nn.Module, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def track_clean(self, x: torch.Tensor) -> None:
        """Remember the logits of ``x`` (the clean input ``(N, ...)``) once they are computed.

        Forgets whatever an earlier call remembered, even for the same tensor: a buffer refilled
        by writes torch cannot see (through NumPy, ``.data``) is then never mistaken for the old one.
        """
        key = _key(x)
        # The reference keeps the memory from being reused while the key names it.
        self._clean_input, self._clean_key = (x, key) if key is not None else (None, None)
        self._clean_logits = {}

    def _is_clean(self, x: torch.Tensor) -> bool:
        return self._clean_input is not None and _key(x) == self._clean_key

    def _known(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """The remembered logits of ``x`` under ``model``, if ``x`` is the clean input and they were computed."""
        if id(model) not in self._clean_logits or not self._is_clean(x):
            return None
        return self._clean_logits[id(model)][1].clone()  # callers may write into logits (tiny: N x K)

    def _remember(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> None:
        if id(model) not in self._clean_logits and self._is_clean(x):
            self._clean_logits[id(model)] = (model, logits.clone())

    def _chunks(self, n: int) -> list[slice]:
        """Row ranges of at most ``batch_size`` covering ``n`` rows (one range, possibly empty, if unsplit)."""
        if not self.batch_size or self.batch_size >= n:
            return [slice(0, n)]
        return [slice(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size)]

    def generator(self, *key: object) -> torch.Generator:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(derive_seed(self.seed, *key))
        return gen

    def randn_like(self, x: torch.Tensor, *key: object) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.generator(*key), dtype=x.dtype).to(x.device)

    def rand_like(self, x: torch.Tensor, *key: object) -> torch.Tensor:
        return torch.rand(x.shape, generator=self.generator(*key), dtype=x.dtype).to(x.device)

    def randint(self, low: int, high: int, size: tuple[int, ...], device: torch.device, *key: object) -> torch.Tensor:
        return torch.randint(low, high, size, generator=self.generator(*key)).to(device)

    @torch.no_grad()
    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)`` of ``x`` without gradient (model calls of at most ``batch_size``); counts N forwards.

        The clean input's logits come from memory after their first computation (no forward counted).
        """
        known = self._known(model, x)
        if known is not None:
            return known
        self.forward_evals += int(x.shape[0])
        parts = self._chunks(int(x.shape[0]))
        out = model(x) if len(parts) == 1 else torch.cat([model(x[part]) for part in parts])
        self._remember(model, x, out)
        return out

    def loss_gradient(
        self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, reduction: str = "sum"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the cross-entropy loss w.r.t. ``x`` and the logits.

        The loss is summed over the batch by default, so each sample's
        gradient does not shrink with the batch size (a mean makes near-zero
        gradients underflow to exactly zero more often). Counts N gradient and
        N forward evaluations.

        Returns ``(grad, logits)`` with ``grad`` shaped like ``x``. With a
        ``batch_size`` below N and the summed loss, the model is called on
        chunks (each sample's gradient does not depend on the others). With
        ``gradient_logits`` the logits of the clean input are remembered for :meth:`logits`.
        """
        n = int(x.shape[0])
        self.grad_evals += n
        self.forward_evals += n
        parts = self._chunks(n) if reduction == "sum" else [slice(0, n)]
        grads, all_logits = [], []
        for part in parts:  # row slices are views: an unsplit call copies nothing
            xp = x[part].detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xp)
                loss = F.cross_entropy(logits, labels[part], reduction=reduction)
                (grad,) = torch.autograd.grad(loss, xp)
            grads.append(grad.detach())
            all_logits.append(logits.detach())
        grad, logits = (grads[0], all_logits[0]) if len(parts) == 1 else (torch.cat(grads), torch.cat(all_logits))
        if self.gradient_logits and len(parts) == len(self._chunks(n)):  # the model calls logits() would make
            self._remember(model, x, logits)
        return grad, logits

    def objective_gradient(self, x: torch.Tensor, objective: torch.Tensor) -> torch.Tensor:
        """Gradient of a scalar ``objective`` built from ``x`` (which requires grad)."""
        (grad,) = torch.autograd.grad(objective, x)
        self.grad_evals += int(x.shape[0])
        return grad.detach()


def _key(x: torch.Tensor) -> tuple[object, ...] | None:
    """What identifies a tensor's values without reading them: memory, layout and its in-place write counter.

    ``None`` for an inference-mode tensor (it has no write counter): its logits are never remembered.
    """
    if x.is_inference():
        return None
    return (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype, str(x.device), x._version)
