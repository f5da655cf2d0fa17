"""Export a model to ONNX, checked before it is written.

The file is written beside its target under a temporary name, run in ONNX Runtime
at two sequence lengths and two batch sizes against PyTorch, and moved into place only when every
output agrees to ``tolerance``; otherwise nothing is left behind and the error says by how much. Batch
and sequence length are dynamic; the carried state is an input and an output (``state_L_P``: layer L,
part P), so a caller continues a text in pieces.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsernn.deploy.wrap import DeployableModel, deployable
from sparsernn.errors import SparsernnError

TOLERANCE = 1e-4
# (sequence length, batch size) of the checks; the export itself traces the first
CHECK_SHAPES = ((7, 3), (13, 1))


class ExportError(SparsernnError):
    """The model cannot be exported, or the exported file does not compute what the model does."""


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError('ONNX export needs onnx and onnxruntime: pip install "sparsernn[deploy]"') from None
    return onnxruntime


def example_inputs(wrapped: DeployableModel, seq: int, batch: int, vocab_size: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (seq, batch), generator=generator)
    device = next(wrapped.parameters()).device
    state = [torch.randn(t.shape, generator=generator).to(t) * 0.1 for t in wrapped.initial_state(batch)]
    return (tokens.to(device), *state)


def _write_onnx(wrapped: DeployableModel, inputs, path: Path) -> None:
    names = ["tokens", *wrapped.state_names()]
    outputs = ["logits", *[f"{n}_out" for n in wrapped.state_names()]]
    axes: dict[str, dict[int, str]] = {"tokens": {0: "sequence", 1: "batch"}, "logits": {0: "sequence", 1: "batch"}}
    for name, tensor in zip(names[1:], inputs[1:]):
        axes[name] = axes[f"{name}_out"] = {tensor.dim() - 2: "batch"}  # (layers, batch, hidden) or (batch, hidden)
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter's deprecation, and its batch-size caution for RNNs whose initial
            # state is not an input: here the state is an input, and the check below runs other batches
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, tuple(inputs), str(path), dynamo=False, input_names=names, output_names=outputs,
                              dynamic_axes=axes, opset_version=17)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is one line naming the model
        raise ExportError(f"ONNX export of {type(wrapped.model).__name__} failed: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None


def _check_onnx(wrapped: DeployableModel, path: Path, vocab_size: int) -> float:
    ort = _onnxruntime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    worst = 0.0
    for seq, batch in CHECK_SHAPES:
        inputs = example_inputs(wrapped, seq, batch, vocab_size, seed=seq)
        with torch.inference_mode():
            expected = wrapped(*inputs)
        got = session.run(None, {n: t.cpu().numpy() for n, t in zip(names, inputs)})
        worst = max(worst, *(float((torch.from_numpy(g) - e.cpu()).abs().max()) for g, e in zip(got, expected)))
    return worst


def export_model(model: nn.Module, path: str | Path, vocab_size: int, *, sidecar: dict[str, Any] | None = None,
                 tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Write ``model`` to ``path`` (``.onnx``) and, beside it, ``PATH.json`` (inputs, outputs,
    the check's largest difference, and ``sidecar``: vocabulary, config). Returns that description."""
    path = Path(path)
    if path.suffix == ".pt2":  # torch.export specialises these models' sequence length today
        raise ExportError(f"{path}: torch.export (.pt2) is not supported yet; export to .onnx")
    if path.suffix != ".onnx":
        raise ExportError(f"{path}: expected a .onnx file name")
    kind = "onnx"
    if not path.parent.is_dir():
        raise ExportError(f"{path}: directory {path.parent} does not exist")
    _onnxruntime()  # said before any work
    wrapped = deployable(model)
    inputs = example_inputs(wrapped, *CHECK_SHAPES[0], vocab_size)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        _write_onnx(wrapped, inputs, temporary)
        worst = _check_onnx(wrapped, temporary, vocab_size)
        if not worst <= tolerance:
            raise ExportError(f"{path}: not written, the exported model differs from PyTorch by {worst:.3g} "
                              f"(more than {tolerance:g}) at (sequence, batch) in {list(CHECK_SHAPES)}")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    description = {"format": kind, "inputs": ["tokens", *wrapped.state_names()],
                   "outputs": ["logits", *[f"{n}_out" for n in wrapped.state_names()]],
                   "tokens_layout": "(sequence, batch)", "max_abs_difference": worst, "tolerance": tolerance,
                   "checked_at": [list(s) for s in CHECK_SHAPES], **(sidecar or {})}
    sidecar_path = path.with_name(path.name + ".json")
    tmp = sidecar_path.with_name(f".{sidecar_path.name}.tmp")
    tmp.write_text(json.dumps(description, indent=1) + "\n")
    os.replace(tmp, sidecar_path)
    return description
