"""Dynamic int8: weights stored as int8, activations quantized on the fly, for the recurrent and linear
layers (the layers that do the multiply-adds; an embedding is a lookup and stays float).

Two routes, one per runtime: ``quantize_model`` for PyTorch eager (``torch.ao``'s dynamic quantization
of ``nn.LSTM``/``nn.GRU``/``nn.Linear``, the recipe of PyTorch's own LSTM language model tutorial), and
``quantize_onnx`` for an exported file (ONNX Runtime's dynamic quantization of its MatMul/LSTM nodes, and
of the embedding's lookup table, stored as 8 bits too). The two do not compute the same numbers, so each is judged by the task's own metric (see
``compare``), never by a tolerance against the float model.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from sparsernn.errors import SparsernnError

QUANTIZABLE = (nn.LSTM, nn.GRU, nn.Linear)


class QuantizeError(SparsernnError):
    """The model or file cannot be quantized as asked."""


def quantizable_modules(model: nn.Module) -> list[str]:
    """Names of the submodules dynamic int8 replaces. Modules that call their child's weights
    themselves (a masked block LSTM runs ``functional_call`` on them) keep their children float."""
    skipped = [name for name, module in model.named_modules() if getattr(module, "reads_child_weights", False)]
    return [name for name, module in model.named_modules()
            if isinstance(module, QUANTIZABLE) and not any(name.startswith(f"{s}.") for s in skipped)]


def quantize_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) whose recurrent and linear layers run in dynamic int8 on CPU."""
    names = quantizable_modules(model)
    if not names:
        raise QuantizeError(f"{type(model).__name__}: no LSTM, GRU or linear layer to quantize")
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    float_copy = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        # torch.ao's deprecation in favour of torchao, which does not quantize recurrent layers
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(float_copy, {name: default_dynamic_qconfig for name in names},
                                     dtype=torch.qint8)
    return quantized.eval()


def quantize_onnx(source: str | Path, target: str | Path) -> None:
    """``source`` (a float ONNX file) quantized to dynamic int8 weights in ``target`` (atomic write)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise QuantizeError('int8 ONNX needs onnxruntime: pip install "sparsernn[deploy]"') from None
    target = Path(target)
    temporary = target.with_name(f".{target.name}.int8.tmp")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process (shape inference) is for convolutional models
    try:
        quantize_dynamic(str(source), str(temporary), weight_type=QuantType.QInt8)
        os.replace(temporary, target)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own errors, many lines: one line naming the file
        text = str(exc).strip()
        raise QuantizeError(f"{target}: ONNX Runtime could not quantize the model "
                            f"({text.splitlines()[0] if text else type(exc).__name__})") from None
    finally:
        root.setLevel(level)
        temporary.unlink(missing_ok=True)


# operators of a quantized graph, by what they hold: int8 weights, or float weights ONNX Runtime left alone
INT8_OPERATORS = {"DynamicQuantizeLSTM": "LSTM", "MatMulInteger": "MatMul", "DynamicQuantizeMatMul": "MatMul",
                  "QGemm": "Gemm"}
FLOAT_OPERATORS = {"LSTM", "GRU", "RNN", "MatMul", "Gemm", "Loop"}


def precision_summary(path: str | Path) -> dict[str, list[str]]:
    """The weight-carrying operators of an ONNX file, ``{"int8": [...], "float": [...]}`` (a GRU, a vanilla
    RNN and an RHN's loop have no int8 kernels in ONNX Runtime and stay float)."""
    import onnx

    ops = [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node]
    return {"int8": [INT8_OPERATORS[op] for op in ops if op in INT8_OPERATORS],
            "float": [op for op in ops if op in FLOAT_OPERATORS]}



def weight_bytes(model: nn.Module, quantized: list[str] | None = None) -> int:
    """Bytes of ``model``'s weights once the modules named in ``quantized`` store theirs as int8 (their
    weight matrices: 1 byte each; biases, embeddings and every other module: float32)."""
    quantized = quantized or []
    total, seen = 0, set()
    # a tied weight is one float tensor, plus an int8 copy in each quantized module that uses it
    for name, param in model.named_parameters(remove_duplicate=False):
        owner, _, leaf = name.rpartition(".")
        if owner in quantized and leaf.startswith("weight"):
            total += param.numel()
        elif id(param) not in seen:
            seen.add(id(param))
            total += param.numel() * param.element_size()
    return total


def export_int8(model: nn.Module, path: str | Path, vocab_size: int, *, sidecar: dict | None = None) -> dict:
    """Export ``model`` to ONNX (checked against PyTorch as every export is), then quantize the file to
    dynamic int8 into ``path``; the sidecar ``PATH.json`` says so. Returns that description."""
    from sparsernn.deploy.export import check_target, export_model, write_sidecar

    path = Path(path)
    if path.suffix != ".onnx":
        raise QuantizeError(f"{path}: --quantize int8 writes ONNX (a .onnx name); in PyTorch, "
                            "sparsernn.deploy.quantize_model(model) quantizes the module")
    check_target(path)  # said of the file asked for, not of the temporary float file
    float_path = path.with_name(f".{path.stem}.float.onnx")
    float_sidecar = float_path.with_name(float_path.name + ".json")
    try:
        description = export_model(model, float_path, vocab_size, sidecar=sidecar)
        quantize_onnx(float_path, path)
    finally:
        float_path.unlink(missing_ok=True)
        float_sidecar.unlink(missing_ok=True)
    description = {**description, "quantized": "dynamic int8 weights (ONNX Runtime), float activations",
                   "float_max_abs_difference": description.pop("max_abs_difference"),
                   "operators": precision_summary(path)}
    write_sidecar(path, description)
    return description
