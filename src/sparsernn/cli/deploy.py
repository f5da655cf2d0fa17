"""Commands that ship a model: ``export`` (ONNX, verified in ONNX Runtime; int8 on request),
``quantize`` (int8 in PyTorch, measured) and ``generate`` (text, from a run or an ONNX file)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from sparsernn.cli.app import note, out, print_table
from sparsernn.errors import SparsernnError

DataDir = Annotated[Optional[str], typer.Option(help="corpus directory for the validation metric "
                                                     "[default: the one the run trained on]")]


class Precision(str, Enum):
    int8 = "int8"


def export(
    ckpt: Annotated[Path, typer.Argument(help="a run directory (its best model) or a checkpoint")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the file to write: model.onnx, or model.pt2 "
                                                                         "(torch.export)")],
    quantize: Annotated[Optional[Precision], typer.Option(help="int8: dynamic int8 weights for the recurrent and "
                                                               "linear layers; prints the validation metric of "
                                                               "both")] = None,
    data_dir: DataDir = None,
) -> None:
    """Export a trained model to ONNX or torch.export (dynamic batch and sequence; the state as inputs
    and outputs), written only once the file read back agrees with PyTorch to 1e-4; FILE.json beside it."""
    from sparsernn.deploy import export_int8, export_model
    from sparsernn.runs import load_model

    model, config, vocab, meta = load_model(ckpt)  # every kind's checkpoint carries its vocabulary
    sidecar = {"kind": meta.get("kind"), "config": config.to_dict(), "vocab": list(vocab.words),
               **({"tags": meta["tags"]} if "tags" in meta else {})}
    write = export_int8 if quantize is not None else export_model
    description = write(model, output, len(vocab), sidecar=sidecar)
    difference = description.get("max_abs_difference", description.get("float_max_abs_difference"))
    runtime = "ONNX Runtime" if output.suffix == ".onnx" else "torch.export.load"
    out.print(f"wrote {output} ({output.stat().st_size / 2**20:.2f} MiB{', int8' if quantize else ''}; {runtime} vs "
              f"PyTorch{' before quantizing' if quantize else ''}: max difference {difference:.2g} at (sequence, "
              f"batch) {description['checked_at']}); vocabulary and config in {output}.json")
    if quantize is not None:
        from sparsernn.deploy import OnnxModel

        operators = description["operators"]
        why = " (ONNX Runtime has no int8 GRU, RNN or loop)" if operators["float"] else ""
        note(f"int8 weights: {_counted(operators['int8'])}; float weights: {_counted(operators['float'])}{why}")
        _print_comparison(_metrics(ckpt, data_dir, {"float (PyTorch)": None,
                                                    "int8 (ONNX Runtime)": OnnxModel(output, threads=1)}))


def _counted(operators: list[str]) -> str:
    return ", ".join(f"{operators.count(op)} {op}" for op in dict.fromkeys(operators)) or "none"


def quantize(
    ckpt: Annotated[Path, typer.Argument(help="a run directory (its best model) or a checkpoint")],
    data_dir: DataDir = None,
) -> None:
    """Dynamic int8 in PyTorch (CPU): the validation metric and the weights' size before and after. In
    Python, ``sparsernn.deploy.quantize_model(model)`` returns the int8 module."""
    from sparsernn.deploy import quantizable_modules, quantize_model, weight_bytes
    from sparsernn.runs import load_model

    model = load_model(ckpt)[0]
    names = quantizable_modules(model)
    quantized = quantize_model(model)
    sizes = {"float (PyTorch)": weight_bytes(model), "int8 (PyTorch)": weight_bytes(model, names)}
    measured = _metrics(ckpt, data_dir, {"float (PyTorch)": None, "int8 (PyTorch)": quantized})
    note(f"int8: {', '.join(names)}")
    _print_comparison(measured, sizes)


def _metrics(ckpt: Path, data_dir: str | None, models: dict):
    """``(metric, {name: validation value})`` for the run's float model (``None`` in ``models``) and the
    others; ``None`` when the run's corpus is not found and no ``--data-dir`` was given (said in a note)."""
    from sparsernn.launch import model_and_task

    try:
        _, float_model, _, task = model_and_task(ckpt, data_dir, "cpu", note=note)
    except SparsernnError as exc:
        if data_dir is not None:  # asked for explicitly: an error, not a shrug
            raise
        note(f"validation metric not measured: {exc} (give --data-dir)")
        return None
    metric = task.primary
    return metric, {name: task.evaluate(float_model if model is None else model, "valid")[metric.name]
                    for name, model in models.items()}


def _print_comparison(measured, sizes: dict | None = None) -> None:
    """One table: each model's validation metric and its change from the first (the float model), and
    the weights' size when given; without a metric, the sizes alone."""
    metric, values = measured if measured is not None else (None, dict.fromkeys(sizes or {}))
    if not values:
        return
    reference = next(iter(values.values()))
    rows = [[name, *([metric.format(value), "-" if n == 0 else f"{100 * (value / reference - 1):+.2f}%"]
                     if metric else []), *([f"{sizes[name] / 2**20:.2f} MiB"] if sizes else [])]
            for n, (name, value) in enumerate(values.items())]
    columns = ["model", *([metric.name, "change"] if metric else []), *(["weights"] if sizes else [])]
    print_table(f"validation {metric.name}" if metric else "int8", columns, rows)


def generate(
    source: Annotated[Path, typer.Argument(help="a language model's run directory or checkpoint, or an exported "
                                                "model.onnx (with its model.onnx.json)")],
    prompt: Annotated[str, typer.Option(help="the text to continue")] = "",
    tokens: Annotated[int, typer.Option(help="how many words to write")] = 20,
    temperature: Annotated[float, typer.Option(help="0: greedy; higher: more varied")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="sample among the K likeliest words only")] = None,
    seed: Annotated[int, typer.Option(help="the same seed writes the same text")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="ONNX Runtime threads (one token at a time runs fastest on "
                                                     "one: docs/benchmarks.md)")] = 1,
) -> None:
    """Continue a prompt with a trained language model, in PyTorch or in ONNX Runtime."""
    from sparsernn.deploy import generate as write

    model, vocab = _language_model(source, threads)
    words = write(model, vocab, prompt, tokens, temperature=temperature, top_k=top_k, seed=seed)
    out.print(" ".join([prompt, *words]).strip(), highlight=False, markup=False)


def _language_model(source: Path, threads: int):
    """``(model, vocabulary)`` of a run, a checkpoint or an exported ONNX file."""
    from sparsernn.data.lm import Vocabulary

    if source.suffix == ".pt2":
        raise SparsernnError(f"{source}: generate reads a run, a checkpoint or an .onnx file; a .pt2 program is "
                             "run in Python: torch.export.load(path).module()(tokens, *state)")
    if source.suffix == ".onnx":
        from sparsernn.deploy import OnnxModel

        if not source.is_file():
            raise SparsernnError(f"{source}: no such file")
        model = OnnxModel(source, threads=threads)
        if "init_state" not in vars(model):
            raise SparsernnError(f"{source}: a tagger's file; generate writes text with a language model")
        if "vocab" not in model.meta:
            raise SparsernnError(f"{source}.json: has no vocabulary (field 'vocab'); export the run again")
        return model, Vocabulary(tuple(model.meta["vocab"]))
    from sparsernn.runs import load_model

    model, _, vocab, _ = load_model(source)
    if not hasattr(model, "init_state"):
        raise SparsernnError(f"{source}: a tagger; generate writes text with a language model")
    return model, vocab
