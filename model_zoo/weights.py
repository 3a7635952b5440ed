"""Weights files that cannot run code: safetensors, identified by the SHA-256 of their bytes.

A zoo model's *weights digest* is the SHA-256 of :func:`weights_bytes` of its
``state_dict``: the safetensors serialization (tensors sorted by name, no
metadata), which is a pure function of the tensors' names, dtypes, shapes and
values. So the digest of a file written by :func:`write_weights` equals
``sha256sum FILE`` and equals the digest of the same model computed in memory,
on any machine; two models share a digest exactly when their weights are equal
bit for bit.

Reading never unpickles: a file is checked to be safetensors (an 8-byte header
length, then a JSON header) before the library parses it, and its digest is
compared with the expected one before any tensor is built.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn

from bench import limits
from bench.fsutil import atomic_write_bytes

WEIGHTS_SUFFIX = ".safetensors"
MAX_WEIGHTS_BYTES = limits.NPZ_WEIGHTS_BYTES
"""The largest weights file read (2 GiB, as for ``.npz`` weights)."""
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and, for a digest, both digests."""


def _state(model_or_state: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return {name: t.detach().to("cpu").contiguous() for name, t in state.items()}


def weights_bytes(model_or_state: nn.Module | dict[str, torch.Tensor]) -> bytes:
    """The canonical file content of a model's weights (safetensors, no metadata)."""
    return bytes(safetensors_save(_state(model_or_state)))


def digest_bytes(data: bytes) -> str:
    """SHA-256 of ``data``, 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def weights_digest(model_or_state: nn.Module | dict[str, torch.Tensor]) -> str:
    """The weights digest of a model (see the module docstring): SHA-256, 64 hex digits."""
    return digest_bytes(weights_bytes(model_or_state))


def write_weights(model_or_state: nn.Module | dict[str, torch.Tensor], path: Path) -> str:
    """Write the weights atomically to ``path``; returns their digest."""
    data = weights_bytes(model_or_state)
    atomic_write_bytes(path, data)
    return digest_bytes(data)


def _kind_of(data: bytes) -> str | None:
    """What a non-safetensors file looks like, for the error message."""
    if data[:1] == b"\x80":
        return "a Python pickle"
    if data[:2] == b"PK":
        return "a zip archive (a torch.save checkpoint or an .npz), which may hold pickles"
    return None


def check_safetensors(data: bytes, *, source: str) -> None:
    """Refuse bytes that are not a safetensors file, without parsing more than its JSON header."""
    kind = _kind_of(data)
    if kind is not None:
        raise WeightsError(f"{source}: not a safetensors weights file: it is {kind}; it was not loaded")
    if len(data) < 8:
        raise WeightsError(f"{source}: not a safetensors weights file ({len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(_MAX_HEADER_BYTES, len(data) - 8):
        raise WeightsError(f"{source}: not a safetensors weights file (header length {header_len} is impossible)")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, ValueError):
        raise WeightsError(f"{source}: not a safetensors weights file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{source}: not a safetensors weights file (its header is not a JSON object)")


def read_weights(path: Path, *, expected_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a safetensors file and its digest; refused when ``expected_sha256`` differs.

    Raises :class:`WeightsError` (one line naming ``path``): missing or oversized
    file, not safetensors (a pickle or a torch checkpoint is refused unread),
    a digest other than ``expected_sha256`` (both digests named), a corrupt body.
    """
    path = Path(path)
    try:
        data = limits.read_bytes_capped(path, MAX_WEIGHTS_BYTES, what="weights file")
    except FileNotFoundError:
        raise WeightsError(f"{path}: weights file not found") from None
    except limits.LimitError as exc:
        raise WeightsError(str(exc)) from None
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights file ({exc.strerror or exc})") from None
    digest = digest_bytes(data)
    if expected_sha256 is not None and digest != expected_sha256:
        raise WeightsError(
            f"{path}: weights digest sha256 {digest} does not match the expected sha256 {expected_sha256}; "
            "the file was not loaded"
        )
    check_safetensors(data, source=str(path))
    try:
        tensors = safetensors_load(data)
    except Exception as exc:  # safetensors raises its own error types for a corrupt body
        raise WeightsError(f"{path}: corrupt safetensors weights file ({exc})") from None
    return dict(tensors), digest
