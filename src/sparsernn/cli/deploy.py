"""Commands that ship a model: ``export`` (ONNX, verified in ONNX Runtime) and ``generate`` (text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sparsernn.cli.app import out


def export(
    ckpt: Annotated[Path, typer.Argument(help="a run directory (its best model) or a checkpoint")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the file to write, model.onnx")],
) -> None:
    """Export a trained model to ONNX (dynamic batch and sequence; the state as inputs and outputs),
    written only once ONNX Runtime agrees with PyTorch to 1e-4; MODEL.onnx.json beside it."""
    from sparsernn.deploy import export_model
    from sparsernn.runs import load_model

    model, config, vocab, meta = load_model(ckpt)  # every kind's checkpoint carries its vocabulary
    sidecar = {"kind": meta.get("kind"), "config": config.to_dict(), "vocab": list(vocab.words),
               **({"tags": meta["tags"]} if "tags" in meta else {})}
    description = export_model(model, output, len(vocab), sidecar=sidecar)
    out.print(f"wrote {output} ({output.stat().st_size / 2**20:.2f} MiB; ONNX Runtime vs PyTorch: max difference "
              f"{description['max_abs_difference']:.2g} at (sequence, batch) {description['checked_at']}); "
              f"vocabulary and config in {output}.json")


def generate(
    ckpt: Annotated[Path, typer.Argument(help="a language model's run directory or checkpoint")],
    prompt: Annotated[str, typer.Option(help="the text to continue")] = "",
    tokens: Annotated[int, typer.Option(help="how many words to write")] = 20,
    temperature: Annotated[float, typer.Option(help="0: greedy; higher: more varied")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="sample among the K likeliest words only")] = None,
    seed: Annotated[int, typer.Option(help="the same seed writes the same text")] = 0,
) -> None:
    """Continue a prompt with a trained language model."""
    from sparsernn.deploy import generate as write
    from sparsernn.runs import load_model

    model, _, vocab, _ = load_model(ckpt)
    words = write(model, vocab, prompt, tokens, temperature=temperature, top_k=top_k, seed=seed)
    out.print(" ".join([prompt, *words]).strip(), highlight=False, markup=False)
