"""Checkpoints: one safetensors file per checkpoint, its JSON metadata in the file's header.

A checkpoint holds tensors (model weights, and for resume the optimizer state, RNG states and the
carried hidden state) and JSON metadata (run config, vocabulary, epoch, metrics). Nested state such
as ``optimizer.state_dict()`` is packed into flat tensors plus a JSON skeleton that points at them,
so nothing is ever unpickled. Writes are atomic (temporary file, fsync, rename): a killed run leaves
either the previous checkpoint or the new one, never a torn file. A readable ``<name>.json`` copy of
the metadata is written beside it for people and tools.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from sparsernn import __version__
from sparsernn.errors import CheckpointError
from sparsernn.files import atomic_write_bytes, atomic_write_text

FORMAT = "sparsernn-checkpoint/1"
_META_KEY = "sparsernn"


def pack(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested structure by ``{"$tensor": key}``, storing it in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"$tensor": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: pack(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        # Non-string keys (optimizer state is keyed by parameter index) keep their type.
        return {"$items": [[k, pack(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [pack(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def unpack(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "$tensor" in skeleton:
            return tensors[skeleton["$tensor"]]
        if "$items" in skeleton:
            return {k: unpack(v, tensors) for k, v in skeleton["$items"]}
        return {k: unpack(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unpack(v, tensors) for v in skeleton]
    return skeleton


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors + metadata atomically. Tensors sharing storage (tied weights) are stored once."""
    path = Path(path)
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for key, tensor in tensors.items():
        identity = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if tensor.numel() > 0 and identity in seen:
            aliases[key] = seen[identity]
            continue
        seen[identity] = key
        stored[key] = tensor.detach().to("cpu", copy=False).contiguous()
    full_meta = {"format": FORMAT, "version": __version__, **meta, "aliases": aliases}
    text = json.dumps(full_meta)
    atomic_write_bytes(path, st_save(stored, metadata={_META_KEY: text}))
    atomic_write_text(path.with_suffix(".json"), json.dumps(full_meta, indent=1) + "\n")


def _read(path: Path, header_only: bool) -> bytes:
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; pass a .safetensors checkpoint file")
    try:
        if not header_only:
            return path.read_bytes()
        with open(path, "rb") as handle:
            head = handle.read(8)
            return head + handle.read(int.from_bytes(head, "little")) if len(head) == 8 else head
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror})") from None


def _metadata(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
    except (ValueError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not a safetensors file") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file")
    text = (header.get("__metadata__") or {}).get(_META_KEY)
    if text is None:
        raise CheckpointError(f"{path}: safetensors file without sparsernn metadata")
    try:
        meta = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: its sparsernn metadata is not valid JSON (a damaged file)") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its sparsernn metadata is not a JSON object (a damaged file)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r}, expected {FORMAT}")
    return meta


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata alone (reads the header, not the tensors)."""
    path = Path(path)
    return _metadata(path, _read(path, header_only=True))


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by ``save``: ``(tensors, metadata)``. Never unpickles anything."""
    path = Path(path)
    raw = _read(path, header_only=False)
    try:
        tensors = st_load(raw)
    except (SafetensorError, ValueError):
        raise CheckpointError(f"{path}: not a safetensors file") from None
    meta = _metadata(path, raw)
    for name, tensor in tensors.items():  # a diverged or corrupted model is refused, never evaluated
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{path}: tensor {name} holds {bad} non-finite value(s) (NaN or inf)")
    tensors = {k: v.to(device) for k, v in tensors.items()}
    for alias, target in meta.get("aliases", {}).items():
        tensors[alias] = tensors[target]
    return tensors, meta


def subtree(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Tensors under ``prefix.`` with the prefix removed (e.g. the model's state_dict)."""
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
