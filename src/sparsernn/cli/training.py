"""Training and using trained models: ``train``, ``eval``, and the ``tag`` group (train, eval, predict)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from sparsernn.cli.app import Device, note, out, print_results, resumable
from sparsernn.cli.options import config_overrides, resolve_named, train_options, with_options
from sparsernn.errors import SparsernnError
from sparsernn.files import refuse_overwriting_inputs

CheckpointArg = Annotated[Path, typer.Argument(help="checkpoint (.safetensors) or run directory (uses best)")]
TaggerArg = Annotated[Path, typer.Argument(help="tagger checkpoint or run directory (uses best)")]


def train(
    preset: Annotated[Optional[str], typer.Option(help="preset in configs/ (`sparsernn presets`; default ptb-small "
                                                       "when no --config)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file, over the preset")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="run directory [default: runs/NAME-TIME]")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="continue the run in this directory")] = None,
    sparsity: Annotated[Optional[float], typer.Option(help="fraction pruned (= 1 - density)",
                                                      rich_help_panel="Config: sparsity")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="any config field: FIELD=VALUE")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="print the resolved config and exit")] = False,
    **fields: Any,
) -> None:
    """Train a model, dense or sparse, keep its best checkpoint and report validation and test."""
    import yaml

    from sparsernn.config import density_override
    from sparsernn.launch import open_trainer
    from sparsernn.progress import default_reporter

    overrides = density_override(config_overrides(set_, fields), sparsity)
    run, cfg = _run_and_config(preset, config, out_dir, resume, overrides)
    cfg = resolve_named(cfg, fields)
    if print_config:
        out.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return
    reporter = default_reporter()
    trainer, corpus_dir = open_trainer(cfg, run, reporter, resume=resume is not None, overrides=overrides)
    for line in _start_lines(trainer, cfg, run, resume is not None):
        reporter.message(line)
    with resumable(f"sparsernn train --resume {run}"):
        result = trainer.fit(test=True)
    metric = trainer.task.primary.name
    print_results({"valid": result[f"val_{metric}"], "test": result[f"test_{metric}"]},
                  f"best epoch {result['best_epoch']}", metric)
    out.print(f"run dir {run}; corpus {corpus_dir}", soft_wrap=True)


def _run_and_config(preset: str | None, config: Path | None, out_dir: Path | None, resume: Path | None,
                    overrides: dict[str, Any]):
    """The run directory and config: the run to continue, or a new one from the preset and config file."""
    from sparsernn.runs import new_run, resumed_run

    if resume is None:
        return new_run(preset, config, overrides, out_dir)
    if preset or config or out_dir:
        raise SparsernnError("--resume takes the run's own config and directory; drop --preset/--config/--out")
    return resumed_run(resume, overrides)


def _start_lines(trainer, cfg, run, resumed: bool) -> list[str]:
    """What is about to be trained: where a resumed run stands, then the model, the task and the run."""
    from sparsernn.models import count_parameters

    lines = []
    if resumed:
        lines.append(f"{run}: the run is complete ({trainer.horizon} of {trainer.horizon} epochs)" if trainer.complete
                     else f"resuming {run} at epoch {trainer.epoch}, step {trainer.step_in_epoch}")
    lines.append(f"{cfg.model.cell} {'x'.join(map(str, cfg.model.hidden_sizes))}, "
                 f"{count_parameters(trainer.model):,} parameters, {trainer.task.describe()}; "
                 f"{trainer.steps_per_epoch} steps/epoch on {trainer.device}; run dir {run}")
    return lines


with_options(train, train_options())


def tag_train(**fields: Any) -> None:
    """Train a sequence tagger (preset pos-tagger unless --preset/--config say otherwise) and report its
    validation and test accuracy; every option of `sparsernn train` applies."""
    if fields.get("preset") is None and fields.get("config") is None and fields.get("resume") is None:
        fields["preset"] = "pos-tagger"
    train(**fields)


tag_train.__signature__ = train.__signature__
tag_train.__annotations__ = dict(train.__annotations__)


def eval_(
    ckpt: CheckpointArg,
    data_dir: Annotated[Optional[str], typer.Option(help="corpus directory [default: the one it trained on]")] = None,
    split: Annotated[list[str], typer.Option(help="valid, test and/or train (the text it trained on: "
                                             "memorisation)")] = ["valid", "test"],  # noqa: B006
    batch_size: Annotated[Optional[int], typer.Option(help="streams [default: the run's eval batch size]")] = None,
    device: Device = "auto",
) -> None:
    """A trained checkpoint's metrics on valid/test/train: perplexity and next-word accuracy (argmax) for
    language models, token accuracy for taggers."""
    from sparsernn.launch import model_and_task
    from sparsernn.runtime import resolve_device

    for name in split:
        if name not in ("valid", "test", "train"):
            raise SparsernnError(f"--split: expected valid, test or train, got {name!r}")
    if batch_size is not None and batch_size < 1:
        raise SparsernnError(f"--batch-size: expected a positive number, got {batch_size}")
    dev = resolve_device(device, "--device")
    path, model, _, task = model_and_task(ckpt, data_dir, dev, eval_batch_size=batch_size, note=note)
    primary = task.primary.name
    results = {}
    for name in split:
        task.check_split(name)
        metrics = task.evaluate(model, name)
        results[name] = {primary: metrics[primary], **{k: v for k, v in metrics.items() if k not in ("loss", primary)}}
    print_results(results, str(path), primary)


def tag_eval(
    ckpt: TaggerArg,
    data_dir: Annotated[Optional[str], typer.Option(help="CoNLL directory [default: the one it trained on]")] = None,
    split: Annotated[list[str], typer.Option(help="valid, test and/or train")] = ["valid", "test"],  # noqa: B006
    device: Device = "auto",
) -> None:
    """Token accuracy of a trained tagger on valid/test/train (padding excluded)."""
    eval_(ckpt, data_dir=data_dir, split=split, batch_size=None, device=device)


def tag_predict(
    ckpt: TaggerArg,
    text: Annotated[Path, typer.Argument(help="text file: one sentence a line, tokens separated by spaces")],
    out_path: Annotated[Optional[Path], typer.Option("--out", "-o", help="write token<TAB>tag (CoNLL) here "
                                                                        "[default: print]")] = None,
) -> None:
    """Tag every sentence of a text file; unknown words are tagged through their unknown-word class's
    embedding (by shape: capitals, digits, hyphen, suffix)."""
    from sparsernn.data.conll import read_sentences
    from sparsernn.files import atomic_write_text
    from sparsernn.runs import load_model, model_path
    from sparsernn.tasks.tagging import tag_sentences, tag_set

    path = model_path(ckpt)
    if out_path is not None:
        refuse_overwriting_inputs("--out", out_path, [ckpt, path, text])
    model, _, _, meta = load_model(path)
    tags = tag_set(meta, path)
    sentences = read_sentences(text)
    conll = tag_sentences(model, meta["vocab"], tags, sentences)
    if out_path is None:
        sys.stdout.write(conll)  # raw: the console would turn the tabs into spaces
    else:
        atomic_write_text(out_path, conll)
        out.print(f"tagged {len(sentences)} sentences -> {out_path}")
