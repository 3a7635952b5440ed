"""External models: an architecture from a ``module:attr`` factory (or the zoo) plus a weights file.

Weights come in two formats:

* ``.pt`` / ``.pth``: a plain ``state_dict`` (a dict of tensors), read with
  ``torch.load(..., weights_only=True)``: no pickled code ever runs.
* ``.npz``: named NumPy arrays, read without pickles and capped (``bench.npzfile.read_npz_capped``).
  A name is either a key of the model's ``state_dict`` (``"3.weight"``) or
  ``fc<k>.weight`` / ``fc<k>.bias``, the ``k``-th ``nn.Linear`` of the model in
  module order, counting from 1 (the numpy assignment's ``fc1.weight`` ...
  ``fc4.bias`` for ``mlp3``). **Transposition**: with ``layout="in_out"`` (the
  default for ``.npz``) linear weights are stored ``(in_features, out_features)``,
  as NumPy code computing ``x @ W + b`` keeps them, and are transposed on load
  into PyTorch's ``(out_features, in_features)``; ``layout="out_in"`` copies
  them as they are. Biases and every other array are never transposed.

Every parameter and buffer of the model must be given, except the ``mean`` /
``std`` buffers of a :class:`~model_zoo.architectures.Normalize` layer (the
preprocessing belongs to the architecture). Shapes are checked tensor by
tensor and a mismatch names the tensor.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from bench import limits
from bench.npzfile import NpzError, read_npz_capped
from bench.registry import RegistryError, import_object
from model_zoo import MODELS
from model_zoo.architectures import Normalize
from model_zoo.training import CheckpointError, assign_state_dict, load_state_dict
from model_zoo.weights import WEIGHTS_SUFFIX, WeightsError, read_weights

Layout = Literal["in_out", "out_in"]
LAYOUTS: tuple[str, ...] = ("in_out", "out_in")
NPZ_SUFFIXES = (".npz",)
TORCH_SUFFIXES = (".pt", ".pth")
SAFETENSORS_SUFFIXES = (WEIGHTS_SUFFIX,)
_FC = re.compile(r"^fc(\d+)\.(weight|bias)$")


class ExternalModelError(CheckpointError):
    """An external model whose factory or weights cannot be used (the message says which and why)."""


TRUST_ENV = "BENCH_TRUSTED_MODULES"
ALWAYS_TRUSTED = ("model_zoo",)


def trusted_prefixes(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """Module prefixes a suite's ``factory:`` may import: the zoo, ``$BENCH_TRUSTED_MODULES`` and ``extra``."""
    env = [p.strip() for p in os.environ.get(TRUST_ENV, "").split(",")]
    return tuple(p for p in (*ALWAYS_TRUSTED, *env, *extra) if p)


def _trusted_by_name(module: str, prefixes: Sequence[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _file_under(module: str, folder: Path) -> Path | None:
    """The source file of ``module`` inside ``folder`` (found without running any code), else None."""
    locations = [str(folder)]
    found = None
    for i, _ in enumerate(parts := module.split(".")):
        found = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), locations)
        if found is None:
            return None
        locations = list(found.submodule_search_locations or [])
    origin = Path(found.origin).resolve() if found is not None and found.origin else None
    return origin if origin is not None and origin.is_relative_to(folder.resolve()) else None


def check_trusted(target: str, *, base: Path | None = None, trust: Sequence[str] = (), what: str = "factory") -> None:
    """Refuse, before importing anything, a ``factory:`` from a module the user does not trust.

    Trusted: the zoo (``model_zoo``), prefixes in ``$BENCH_TRUSTED_MODULES``
    (comma-separated) or ``trust`` (``bench run --trust``), and modules whose
    file lies under ``base`` (the suite file's own folder), which is then put
    at the end of ``sys.path`` so that worker processes import it too.
    """
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ExternalModelError(f"{what} plugin {target!r} must have the form 'package.module:attr'")
    if _trusted_by_name(module, trusted_prefixes(trust)):
        return
    if base is not None and (origin := _file_under(module, base)) is not None:
        folder = str(base.resolve())
        if folder not in sys.path:
            sys.path.append(folder)
        top = module.split(".")[0]
        try:  # where `import top` would really go (a top-level name: finding it runs no code)
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        places = [spec.origin] if spec is not None and spec.origin else []
        places += list(spec.submodule_search_locations or []) if spec is not None else []
        if not places or not all(Path(p).resolve().is_relative_to(base.resolve()) for p in places):
            raise ExternalModelError(
                f"{what} {target!r}: {origin} has the name of an installed module {top!r}, which an import "
                "would load instead; rename the file"
            )
        return
    top = module.split(".")[0]
    raise ExternalModelError(
        f"{what} {target!r}: module {module!r} is not trusted, so it is not imported (a suite file must not run "
        f"code). Trusted: model_zoo, modules in the suite's own folder, and what you name: "
        f"`bench run --trust {top}` or {TRUST_ENV}={top}"
    )


def resolve_factory(target: str, *, base: Path | None = None, trust: Sequence[str] | None = None) -> Any:
    """Import ``"package.module:attr"`` and check that it is a class or function that can build a model.

    With ``trust`` given (suite validation), the module must be trusted
    (:func:`check_trusted`) before it is imported; ``None`` (Python callers,
    and worker processes of a validated suite) skips that check.
    """
    if trust is not None:
        check_trusted(target, base=base, trust=trust)
    try:
        fn = import_object(target)
    except RegistryError as exc:
        raise ExternalModelError(f"factory {exc}") from None
    if inspect.isclass(fn):
        if not issubclass(fn, nn.Module):
            raise ExternalModelError(f"factory {target!r} is the class {fn.__name__}, not a torch.nn.Module subclass")
    elif not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        raise ExternalModelError(
            f"factory {target!r} is a {type(fn).__name__}, not a callable returning a model "
            "(a Python function or an nn.Module class)"
        )
    return fn


def build_from_factory(
    target: str, *, input_shape: tuple[int, int, int], num_classes: int, params: dict[str, Any] | None = None
) -> nn.Module:
    """Call the factory ``target`` with ``params``; ``input_shape``/``num_classes`` are passed if it takes them.

    The zoo's architectures (``model_zoo.architectures:mlp3``) take both, so
    they work as factories unchanged; a factory without those parameters is
    called with ``params`` only.
    """
    fn = resolve_factory(target)
    kwargs = dict(params or {})
    try:
        accepted = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        accepted = {}
    for key, value in (("input_shape", tuple(input_shape)), ("num_classes", num_classes)):
        if key in accepted and key not in kwargs:
            kwargs[key] = value
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        raise ExternalModelError(f"factory {target!r}: cannot be called with {sorted(kwargs)}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ExternalModelError(f"factory {target!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def weights_format(path: Path) -> Literal["npz", "torch", "safetensors"]:
    suffix = path.suffix.lower()
    if suffix in NPZ_SUFFIXES:
        return "npz"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    allowed = ", ".join((*TORCH_SUFFIXES, *NPZ_SUFFIXES, *SAFETENSORS_SUFFIXES))
    raise ExternalModelError(f"weights {path}: unknown file type {path.suffix!r} (allowed: {allowed})")


def linear_layers(model: nn.Module) -> list[str]:
    """Qualified names of the model's ``nn.Linear`` modules in module order (``fc1`` is the first)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def _optional_keys(model: nn.Module) -> set[str]:
    """State-dict keys an ``.npz`` may leave out: the buffers of ``Normalize`` layers."""
    out = set()
    for name, module in model.named_modules():
        if isinstance(module, Normalize):
            out |= {f"{name}.{b}" if name else b for b, _ in module.named_buffers(recurse=False)}
    return out


def npz_state_dict(model: nn.Module, arrays: dict[str, np.ndarray], *, source: str, layout: Layout) -> dict[str, Any]:
    """Map named arrays onto ``model``'s state-dict keys, transposing linear weights for ``layout="in_out"``.

    Returns a complete state dict (tensors in the model's dtypes); raises
    :class:`ExternalModelError` naming the first unknown, missing or mis-shaped array.
    """
    if layout not in LAYOUTS:
        raise ExternalModelError(f"weights {source}: unknown layout {layout!r} (allowed: {', '.join(LAYOUTS)})")
    own = model.state_dict()
    linears = linear_layers(model)
    linear_weights = {f"{name}.weight" for name in linears}
    state: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, array in arrays.items():
        target = key
        if key not in own:
            match = _FC.match(key)
            if match is None:
                raise ExternalModelError(
                    f"weights {source}: array {key!r} matches no tensor of the model "
                    f"(use fc1.weight ... fc{len(linears)}.bias or state-dict keys: {', '.join(own)})"
                )
            k = int(match.group(1))
            if not 1 <= k <= len(linears):
                raise ExternalModelError(
                    f"weights {source}: array {key!r} names linear layer {k}, the model has {len(linears)} "
                    f"(fc1 ... fc{len(linears)})"
                )
            target = f"{linears[k - 1]}.{match.group(2)}"
        if target in origin:
            raise ExternalModelError(f"weights {source}: arrays {origin[target]!r} and {key!r} both set {target!r}")
        if not np.issubdtype(array.dtype, np.number):
            raise ExternalModelError(f"weights {source}: array {key!r} has non-numeric dtype {array.dtype}")
        stored = tuple(array.shape)
        if layout == "in_out" and target in linear_weights:
            if array.ndim != 2:
                raise ExternalModelError(f"weights {source}: array {key!r} is {array.ndim}-D, a linear weight is 2-D")
            array = array.T
        expected = tuple(own[target].shape)
        if tuple(array.shape) != expected:
            note = (
                f" ((in_features, out_features) = {expected[::-1]} in layout 'in_out')"
                if layout == "in_out" and target in linear_weights
                else ""
            )
            raise ExternalModelError(
                f"weights {source}: array {key!r} (tensor {target!r}) has shape {stored}, "
                f"the architecture expects {expected}{note}"
            )
        # np.array, not np.ascontiguousarray: the latter turns 0-d arrays (num_batches_tracked) into 1-d
        state[target] = torch.from_numpy(np.array(array, order="C", copy=True)).to(own[target].dtype)
        origin[target] = key
    optional = _optional_keys(model)
    missing = [k for k in own if k not in state and k not in optional]
    if missing:
        aliases = {f"{name}.{p}": f"fc{i + 1}.{p}" for i, name in enumerate(linears) for p in ("weight", "bias")}
        named = [f"{k} ({aliases[k]})" if k in aliases else k for k in missing]
        raise ExternalModelError(f"weights {source}: no array for tensor(s) {', '.join(named)}")
    return {k: state.get(k, own[k]) for k in own}


def load_npz(model: nn.Module, path: Path, *, layout: Layout = "in_out") -> None:
    """Load ``.npz`` arrays into ``model`` (see the module docstring for names and transposition)."""
    try:
        arrays = read_npz_capped(path, limits.NPZ_WEIGHTS_BYTES, what="weights")
    except (NpzError, limits.LimitError) as exc:
        raise ExternalModelError(f"weights {path}: cannot be read as an .npz of numeric arrays ({exc})") from None
    assign_state_dict(model, npz_state_dict(model, arrays, source=str(path), layout=layout), source=str(path))


def load_weights(model: nn.Module, path: Path, *, layout: Layout | None = None) -> None:
    """Load a ``.pt``/``.pth`` state dict (``weights_only=True``), a ``.safetensors`` file (as ``bench zoo export``
    writes) or an ``.npz`` into ``model``, checking shapes."""
    path = Path(path)
    if not path.is_file():
        raise ExternalModelError(f"weights {path}: file not found")
    kind = weights_format(path)
    if kind != "npz" and layout is not None:
        raise ExternalModelError(f"weights {path}: 'weights_layout' applies to .npz files only")
    if kind == "torch":
        load_state_dict(model, path)
    elif kind == "safetensors":
        try:
            state, _ = read_weights(path)
        except WeightsError as exc:
            raise ExternalModelError(f"weights {exc}") from None
        assign_state_dict(model, state, source=str(path))
    else:
        load_npz(model, path, layout=layout or "in_out")


def file_digest(path: Path) -> str:
    """sha256 of a weights file (64 hex digits), recorded in ``models.json``: equal to the reference's digest
    when the file is a reference weights file (``bench zoo export``)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_external(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    factory: str | None = None,
    weights: Path | str | None = None,
    params: dict[str, Any] | None = None,
    layout: Layout | None = None,
) -> nn.Module:
    """An external model in eval mode: ``factory`` (else the zoo architecture ``name``) with ``weights`` loaded.

    Args:
        name: zoo architecture used when ``factory`` is ``None``.
        input_shape: ``(C, H, W)`` of the data, passed to factories that take it.
        num_classes: class count of the data, passed to factories that take it.
        factory: ``"package.module:attr"`` returning an ``nn.Module`` that maps
            ``(N, C, H, W)`` pixels in [0, 1] to logits ``(N, num_classes)``.
        weights: ``.pt``/``.pth`` state dict or ``.npz`` arrays; ``None`` keeps the factory's weights.
        params: keyword arguments for the factory (or the zoo architecture).
        layout: ``.npz`` linear-weight layout, ``"in_out"`` (default) or ``"out_in"``.
    """
    if factory is not None:
        model = build_from_factory(factory, input_shape=input_shape, num_classes=num_classes, params=params)
    else:
        entry = MODELS.get(name)
        model = entry.factory(tuple(input_shape), num_classes, **{**entry.kwargs, **(params or {})})
    if weights is not None:
        load_weights(model, Path(weights), layout=layout)
    return model.eval()
