"""Export a model to ONNX or to torch.export's ``.pt2``, checked before it is written.

The file is written beside its target under a temporary name, run (ONNX Runtime; ``torch.export.load``)
at two sequence lengths and two batch sizes against PyTorch, and moved into place only when every
output agrees to ``tolerance``; otherwise nothing is left behind and the error says by how much. Batch
and sequence length are dynamic; the carried state is an input and an output (``state_L_P``: layer L,
part P), so a caller continues a text in pieces. Layers whose loop over time an exporter would unroll
are exported in a form that keeps it one loop (``recurrence``): an RHN in ONNX, every layer in ``.pt2``.
A ``.pt2`` file needs PyTorch only: ``torch.export.load(path).module()(tokens, *state)``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsernn.deploy.pt2 import load_pt2, write_pt2
from sparsernn.deploy.onnx_state import with_default_state
from sparsernn.deploy.recurrence import export_forms, onnx_form
from sparsernn.deploy.wrap import DeployableModel, deployable
from sparsernn.errors import SparsernnError

TOLERANCE = 1e-4
# (sequence length, batch size) of the checks; the export itself traces the first
CHECK_SHAPES = ((7, 3), (13, 1))


class ExportError(SparsernnError):
    """The model cannot be exported, or the exported file does not compute what the model does."""


def _onnxruntime():
    try:
        import onnx  # noqa: F401 - the exporter needs it too, and says so without naming the extra
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
        # layers the tracer cannot take as they are, in their export forms (an RHN's loop: an ONNX Loop)
        with warnings.catch_warnings(), export_forms(wrapped, onnx_form):
            # the TorchScript exporter's deprecation, and its batch-size caution for RNNs whose initial
            # state is not an input: here the state is an input, and the check below runs other batches
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, tuple(inputs), str(path), dynamo=False, input_names=names, output_names=outputs,
                              dynamic_axes=axes, opset_version=17)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is one line naming the model
        raise ExportError(f"ONNX export of {type(wrapped.model).__name__} failed: {_first_line(exc)}") from None
    if wrapped.state_names():  # the state inputs become optional: left out, a text starts from zeros
        import onnx

        onnx.save(with_default_state(onnx.load(str(path)), wrapped.state_names()), str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _write_pt2(wrapped: DeployableModel, inputs, path: Path) -> None:
    try:
        write_pt2(wrapped, inputs, path)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is one line naming the model
        layers = sorted({type(m).__name__ for m in getattr(wrapped.model, "layers", [])})
        raise ExportError(f"torch.export (.pt2) of {type(wrapped.model).__name__} (layers: {', '.join(layers)}) "
                          f"failed: {_first_line(exc)}") from None


def _largest_difference(wrapped: DeployableModel, vocab_size: int,
                        run: Callable[[tuple[torch.Tensor, ...]], list[torch.Tensor]],
                        zero_state: bool = False) -> float:
    """The largest difference between ``run``'s outputs and PyTorch's over the check's shapes (from the
    zero state with ``zero_state``)."""
    worst = 0.0
    for seq, batch in CHECK_SHAPES:
        inputs = example_inputs(wrapped, seq, batch, vocab_size, seed=seq)
        if zero_state:
            inputs = (inputs[0], *wrapped.initial_state(batch))
        with torch.inference_mode():
            expected = wrapped(*inputs)
        try:
            got = run(inputs)
        except Exception as exc:  # noqa: BLE001 - e.g. a loop the exporter unrolled, at another length
            raise ExportError(f"the exported file fails at (sequence, batch) ({seq}, {batch}): "
                              f"{_first_line(exc)}") from None
        worst = max(worst, *(float((g.cpu() - e.cpu()).abs().max()) for g, e in zip(got, expected, strict=True)))
    return worst


def _check_onnx(wrapped: DeployableModel, path: Path, vocab_size: int) -> float:
    from sparsernn.deploy.onnx_model import open_session

    _onnxruntime()
    session = open_session(path)
    names = ["tokens", *wrapped.state_names()]

    def run(inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return [torch.from_numpy(g) for g in session.run(None, {n: t.cpu().numpy() for n, t in zip(names, inputs)})]

    def run_without_state(inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return [torch.from_numpy(g) for g in session.run(None, {"tokens": inputs[0].cpu().numpy()})]

    worst = _largest_difference(wrapped, vocab_size, run)
    if wrapped.state_names():  # left out, the state must be the zeros the model starts from
        worst = max(worst, _largest_difference(wrapped, vocab_size, run_without_state, zero_state=True))
    return worst


def _check_pt2(wrapped: DeployableModel, path: Path, vocab_size: int) -> float:
    program = load_pt2(path)

    def run(inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        with torch.inference_mode():
            return list(program(*inputs))

    return _largest_difference(wrapped, vocab_size, run)


def check_target(path: Path) -> None:
    """The file can be written: its directory exists and the name is not a directory."""
    if not path.parent.is_dir():
        raise ExportError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise ExportError(f"{path}: is a directory; give a file name")


def _check_float(model: nn.Module) -> None:
    """An int8 PyTorch module (``quantize_model``'s) has no exportable form: its packed weights are opaque."""
    if any(".quantized." in type(m).__module__ for m in model.modules()):
        raise ExportError(f"{type(model).__name__} holds int8 PyTorch modules, which do not export; export the "
                          "float model with --quantize int8 (sparsernn.deploy.export_int8)")


def _format_of(path: Path) -> str:
    """``onnx`` or ``pt2`` from the file name; says what is missing before any work."""
    if path.suffix not in (".onnx", ".pt2"):
        raise ExportError(f"{path}: expected a .onnx file name (or .pt2 for torch.export)")
    check_target(path)
    if path.suffix == ".onnx":
        _onnxruntime()
    return path.suffix[1:]


def export_model(model: nn.Module, path: str | Path, vocab_size: int, *, sidecar: dict[str, Any] | None = None,
                 tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Write ``model`` to ``path`` (``.onnx``, or ``.pt2`` for torch.export) and, beside it, ``PATH.json``
    (inputs, outputs, the check's largest difference, and ``sidecar``: vocabulary, config). Returns
    that description."""
    path = Path(path)
    kind = _format_of(path)
    _check_float(model)
    was_training = model.training
    wrapped = deployable(model)  # eval mode for the export; the caller's mode is given back below
    inputs = example_inputs(wrapped, *CHECK_SHAPES[0], vocab_size)
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        (_write_onnx if kind == "onnx" else _write_pt2)(wrapped, inputs, temporary)
        try:
            worst = (_check_onnx if kind == "onnx" else _check_pt2)(wrapped, temporary, vocab_size)
        except ExportError as exc:
            raise ExportError(f"{path}: not written, {exc}") from None
        if not worst <= tolerance:
            raise ExportError(f"{path}: not written, the exported model differs from PyTorch by {worst:.3g} "
                              f"(more than {tolerance:g}) at (sequence, batch) in {list(CHECK_SHAPES)}")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
        model.train(was_training)
    description = {"format": kind, "inputs": ["tokens", *wrapped.state_names()],
                   "outputs": ["logits", *[f"{n}_out" for n in wrapped.state_names()]],
                   "tokens_layout": "(sequence, batch)", "max_abs_difference": worst, "tolerance": tolerance,
                   "checked_at": [list(s) for s in CHECK_SHAPES], **(sidecar or {})}
    write_sidecar(path, description)
    return description


def write_sidecar(path: Path, description: dict[str, Any]) -> None:
    """``PATH.json`` beside the exported file, written atomically."""
    sidecar_path = path.with_name(path.name + ".json")
    tmp = sidecar_path.with_name(f".{sidecar_path.name}.tmp")
    tmp.write_text(json.dumps(description, indent=1) + "\n")
    os.replace(tmp, sidecar_path)
