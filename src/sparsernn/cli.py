"""The ``sparsernn`` command line. Every option of ``train`` maps to one config field (see
``TRAIN_OPTION_FIELDS``); any other field can be set with ``--set FIELD=VALUE``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from sparsernn import __version__
from sparsernn.errors import SparsernnError

app = typer.Typer(
    help="sparsernn: sparse, small and fast recurrent sequence models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Get and check corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)

# CLI option name -> config field it sets.
TRAIN_OPTION_FIELDS = {
    "data_dir": "data.dir",
    "batch_size": "data.batch_size",
    "eval_batch_size": "data.eval_batch_size",
    "bptt": "data.bptt",
    "epoch_tokens": "data.epoch_tokens",
    "cell": "model.cell",
    "hidden": "model.hidden_sizes",
    "embedding_size": "model.embedding_size",
    "dropout": "model.dropout",
    "tie_weights": "model.tie_weights",
    "init_range": "model.init_range",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "momentum": "optim.momentum",
    "weight_decay": "optim.weight_decay",
    "clip": "optim.clip",
    "lr_decay": "optim.lr_decay",
    "decay_start_epoch": "optim.decay_start_epoch",
    "nonmono": "optim.nonmono",
    "method": "sparsity.method",
    "density": "sparsity.density",
    "prunable": "sparsity.prunable",
    "sparse_init": "sparsity.init",
    "death": "sparsity.death",
    "growth": "sparsity.growth",
    "redistribution": "sparsity.redistribution",
    "death_rate": "sparsity.death_rate",
    "death_rate_min": "sparsity.death_rate_min",
    "update_every": "sparsity.update_every",
    "stop_epoch": "sparsity.stop_epoch",
    "start_epoch": "sparsity.start_epoch",
    "end_epoch": "sparsity.end_epoch",
    "lasso_lambda": "sparsity.lasso_lambda",
    "zero_threshold": "sparsity.zero_threshold",
    "group_biases": "sparsity.group_biases",
    "init_from": "train.init_from",
    "epochs": "train.epochs",
    "seed": "train.seed",
    "device": "train.device",
    "log_interval": "train.log_interval",
    "checkpoint_every": "train.checkpoint_every",
}


def _hidden_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers like 200,200, got {text!r}") from None
    return sizes


def _update_every(text: str) -> int | str:
    return text if text == "epoch" else int(text) if text.isdigit() else text


def _lambdas(text: str) -> float | list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected a number or comma-separated numbers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


_CONVERT = {"hidden": _hidden_sizes, "prunable": lambda v: v.split(","), "update_every": _update_every,
            "lasso_lambda": _lambdas}


@app.command()
def train(
    preset: Annotated[Optional[str], typer.Option(help="preset in configs/ (default ptb-small when no --config)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file, over the preset")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="run directory [default: runs/NAME-TIME]")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="continue the run in this directory")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="corpus directory (train/valid/test files)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="training streams")] = None,
    eval_batch_size: Annotated[Optional[int], typer.Option(help="validation/test streams")] = None,
    bptt: Annotated[Optional[int], typer.Option(help="unrolled steps per window")] = None,
    epoch_tokens: Annotated[Optional[int], typer.Option(help="cap on training tokens per epoch")] = None,
    cell: Annotated[Optional[str], typer.Option(help="lstm | gru | rnn_tanh | rnn_relu")] = None,
    hidden: Annotated[Optional[str], typer.Option(help="per-layer hidden sizes, e.g. 373,315")] = None,
    embedding_size: Annotated[Optional[int], typer.Option(help="embedding size [default: first hidden size]")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="dropout on non-recurrent connections")] = None,
    tie_weights: Annotated[Optional[bool], typer.Option("--tie-weights/--no-tie-weights")] = None,
    init_range: Annotated[Optional[float], typer.Option(help="uniform init range")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="sgd | adam | asgd")] = None,
    lr: Annotated[Optional[float], typer.Option(help="learning rate (per-token mean loss)")] = None,
    momentum: Annotated[Optional[float], typer.Option()] = None,
    weight_decay: Annotated[Optional[float], typer.Option()] = None,
    clip: Annotated[Optional[float], typer.Option(help="max gradient norm")] = None,
    lr_decay: Annotated[Optional[float], typer.Option(help="lr factor per epoch after --decay-start-epoch")] = None,
    decay_start_epoch: Annotated[Optional[int], typer.Option(help="last epoch at the initial lr")] = None,
    nonmono: Annotated[Optional[int], typer.Option(help="nt_asgd: epochs without improvement before averaging")] = None,
    method: Annotated[Optional[str], typer.Option(
        help="dense | static | set | rigl | snfs | dsr | selfish | gmp", rich_help_panel="Sparsity")] = None,
    density: Annotated[Optional[float], typer.Option(help="fraction of prunable weights kept",
                                                     rich_help_panel="Sparsity")] = None,
    sparsity: Annotated[Optional[float], typer.Option(help="fraction pruned (= 1 - density)",
                                                      rich_help_panel="Sparsity")] = None,
    prunable: Annotated[Optional[str], typer.Option(help="comma list of embedding,recurrent,decoder",
                                                    rich_help_panel="Sparsity")] = None,
    sparse_init: Annotated[Optional[str], typer.Option(help="uniform | er", rich_help_panel="Sparsity")] = None,
    death: Annotated[Optional[str], typer.Option(help="magnitude | set | threshold | global_magnitude",
                                                 rich_help_panel="Sparsity")] = None,
    growth: Annotated[Optional[str], typer.Option(help="random | gradient | momentum",
                                                  rich_help_panel="Sparsity")] = None,
    redistribution: Annotated[Optional[str], typer.Option(help="none | magnitude | nonzeros | momentum",
                                                          rich_help_panel="Sparsity")] = None,
    death_rate: Annotated[Optional[float], typer.Option(help="initial fraction pruned per update",
                                                        rich_help_panel="Sparsity")] = None,
    death_rate_min: Annotated[Optional[float], typer.Option(help="death rate reached by cosine annealing",
                                                            rich_help_panel="Sparsity")] = None,
    update_every: Annotated[Optional[str], typer.Option(help="steps between mask updates, or 'epoch'",
                                                        rich_help_panel="Sparsity")] = None,
    stop_epoch: Annotated[Optional[int], typer.Option(help="no mask updates after this epoch",
                                                      rich_help_panel="Sparsity")] = None,
    start_epoch: Annotated[Optional[int], typer.Option(help="gmp: first epoch that prunes",
                                                       rich_help_panel="Sparsity")] = None,
    end_epoch: Annotated[Optional[int], typer.Option(help="gmp: epoch that reaches the density",
                                                     rich_help_panel="Sparsity")] = None,
    lasso_lambda: Annotated[Optional[str], typer.Option(
        help="iss/l1: lambda, or one per layer: 0.002,0.001", rich_help_panel="Sparsity")] = None,
    zero_threshold: Annotated[Optional[float], typer.Option(help="iss/l1: zero weights below this",
                                                            rich_help_panel="Sparsity")] = None,
    group_biases: Annotated[Optional[bool], typer.Option("--group-biases/--no-group-biases",
                                                         rich_help_panel="Sparsity")] = None,
    init_from: Annotated[Optional[str], typer.Option(help="start from this checkpoint's weights")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="number of epochs")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda")] = None,
    log_interval: Annotated[Optional[int], typer.Option(help="steps between progress updates")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="resume checkpoint every N steps")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="any config field: FIELD=VALUE")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="print the resolved config and exit")] = False,
) -> None:
    """Train a language model, dense or sparse, and keep its best checkpoint."""
    import yaml

    from sparsernn.config import parse_override, resolve_config, validate
    from sparsernn.data import load_corpus, resolve_lm_dir
    from sparsernn.progress import default_reporter
    from sparsernn.train import LAST, Trainer

    given = locals()
    overrides: dict[str, Any] = dict(parse_override(item) for item in set_ or [])
    for option, field in TRAIN_OPTION_FIELDS.items():
        value = given[option]
        if value is not None:
            overrides[field] = _CONVERT.get(option, lambda v: v)(value)
    if sparsity is not None:
        if density is not None:
            raise SparsernnError("give --density or --sparsity, not both")
        overrides["sparsity.density"] = round(1.0 - sparsity, 12)

    if resume is not None:
        if preset or config:
            raise SparsernnError("--resume takes the run's own config; drop --preset/--config")
        run_dir = resume
        from sparsernn import checkpoint

        _, meta = checkpoint.load(run_dir / LAST)
        stored = meta["config"]
        for dotted, value in overrides.items():
            section, _, leaf = dotted.partition(".")
            stored.setdefault(section, {})[leaf] = value
        cfg = validate(stored, f"{run_dir / LAST} config + overrides")
    else:
        cfg = resolve_config(preset or (None if config else "ptb-small"), config, overrides)
        name = preset or (config.stem if config else "ptb-small")
        run_dir = out_dir or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (run_dir / LAST).exists():
            raise SparsernnError(f"{run_dir}: holds a run already; continue it with --resume {run_dir} or pick another --out")

    if print_config:
        out.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return
    reporter = default_reporter()
    corpus_dir, note = resolve_lm_dir(cfg.data.dir)
    if note:
        reporter.message(f"[yellow]note:[/] {note}")
    corpus = load_corpus(corpus_dir)
    cfg.data.dir = str(corpus_dir.resolve())  # the run records exactly which corpus it used
    trainer = Trainer(cfg, corpus, run_dir, reporter=reporter)
    if resume is not None:
        trainer.load_resume(run_dir / LAST)
        reporter.message(f"resuming {run_dir} at epoch {trainer.epoch}, step {trainer.step_in_epoch}")
    from sparsernn.models import count_parameters

    reporter.message(
        f"{cfg.model.cell.upper()} LM {'x'.join(map(str, cfg.model.hidden_sizes))}, vocab {len(corpus.vocab)}, "
        f"{count_parameters(trainer.model):,} parameters, {trainer.steps_per_epoch} steps/epoch on "
        f"{trainer.device}; corpus {corpus_dir}; run dir {run_dir}"
    )
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        err.print(f"interrupted; continue with: sparsernn train --resume {run_dir}")
        raise typer.Exit(130) from None
    _print_results({"valid": result["val_ppl"], "test": result["test_ppl"]}, f"best epoch {result['best_epoch']}")


def _print_results(ppl: dict[str, float], title: str) -> None:
    table = Table(title=title)
    table.add_column("split")
    table.add_column("perplexity", justify="right")
    for split, value in ppl.items():
        table.add_row(split, f"{value:.2f}")
    out.print(table)


def _model_and_corpus(ckpt: Path, data_dir: str | None, device, corpora: dict | None = None):
    """A trained model and the corpus it is used with; their vocabularies must agree."""
    from sparsernn.data import load_corpus, resolve_lm_dir
    from sparsernn.errors import CheckpointError
    from sparsernn.train import BEST, load_model

    path = ckpt / BEST if ckpt.is_dir() else ckpt
    model, cfg, vocab, _ = load_model(path, device)
    corpus_dir, note = resolve_lm_dir(data_dir or cfg.data.dir)
    if note:
        err.print(f"note: {note}")
    corpora = {} if corpora is None else corpora
    if corpus_dir not in corpora:
        corpora[corpus_dir] = load_corpus(corpus_dir)
    corpus = corpora[corpus_dir]
    if corpus.vocab != vocab:
        raise CheckpointError(f"{path}: its vocabulary ({len(vocab)} words) differs from the corpus in {corpus_dir}")
    return path, model, cfg, corpus


@app.command("eval")
def eval_(
    ckpt: Annotated[Path, typer.Argument(help="checkpoint (.safetensors) or run directory (uses best)")],
    data_dir: Annotated[Optional[str], typer.Option(help="corpus directory [default: the one it trained on]")] = None,
    split: Annotated[list[str], typer.Option(help="valid and/or test")] = ["valid", "test"],  # noqa: B006
    batch_size: Annotated[Optional[int], typer.Option(help="streams [default: the run's eval batch size]")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Perplexity of a trained checkpoint on valid/test."""
    from sparsernn.data import batchify
    from sparsernn.train import evaluate, resolve_device

    dev = resolve_device(device)
    path, model, cfg, corpus = _model_and_corpus(ckpt, data_dir, dev)
    results = {}
    for name in split:
        data = batchify(corpus.split(name), batch_size or cfg.data.eval_batch_size).to(dev)
        results[name] = evaluate(model, data, cfg.data.bptt).perplexity
    _print_results(results, str(path))


@app.command()
def lyapunov(
    ckpts: Annotated[list[Path], typer.Argument(help="checkpoints or run directories (best); several are overlaid")],
    data_dir: Annotated[Optional[str], typer.Option(help="corpus [default: the one the model trained on]")] = None,
    samples: Annotated[int, typer.Option(help="K sequences from the validation data")] = 10,
    steps: Annotated[int, typer.Option(help="T steps per sequence")] = 100,
    warmup: Annotated[int, typer.Option(help="steps run before exponents are counted")] = 0,
    k: Annotated[Optional[int], typer.Option("--k", help="number of exponents [default: all]")] = None,
    state: Annotated[str, typer.Option(help="hc: (h, c) per LSTM layer; h: h only, c held fixed in the step")] = "hc",
    basis: Annotated[str, typer.Option(help="layers: one basis per layer (exact union, faster); "
                                            "stack: one basis for the whole state (the public code's estimate)")] = "layers",
    qr_every: Annotated[int, typer.Option(help="re-orthonormalise every s steps")] = 1,
    float32: Annotated[bool, typer.Option("--float32/--float64", help="arithmetic precision")] = False,
    log_base: Annotated[str, typer.Option(help="e or 2")] = "e",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    out_json: Annotated[Optional[Path], typer.Option("--out", "-o", help="write spectra as JSON")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="write the spectra as a PNG plot")] = None,
) -> None:
    """Lyapunov spectrum of trained models on validation sequences (closed-form Jacobians, batched)."""
    import json
    import math

    import torch

    from sparsernn.dynamics import lyapunov_spectrum, validation_sequences
    from sparsernn.train import resolve_device

    if state not in ("hc", "h") or basis not in ("layers", "stack") or log_base not in ("e", "2"):
        raise SparsernnError("--state must be hc or h, --basis layers or stack, --log-base e or 2")
    dev = resolve_device(device)
    spectra, corpora = {}, {}
    for ckpt in ckpts:
        path, model, _, corpus = _model_and_corpus(ckpt, data_dir, dev, corpora)
        try:
            sequences = validation_sequences(corpus.valid, samples, steps)
            spectrum = lyapunov_spectrum(model, sequences, k=k, state=state, basis=basis, warmup=warmup,
                                         qr_every=qr_every,
                                         dtype=torch.float32 if float32 else torch.float64,
                                         log_base=math.e if log_base == "e" else 2.0)
        except ValueError as exc:
            raise SparsernnError(f"{path}: {exc}") from None
        spectra[str(ckpt)] = spectrum
    table = Table(title=f"Lyapunov spectra: K={samples}, T={steps}, warm-up {warmup}, state {state}, basis {basis}")
    for column in ("model", "exponents", "max", "mean", "variance", "positive"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for label, spectrum in spectra.items():
        f = spectrum.features
        table.add_row(label, str(spectrum.exponents.numel()), f"{f['max']:.4f}", f"{f['mean']:.4f}",
                      f"{f['variance']:.4f}", str(f["num_positive"]))
    out.print(table)
    if out_json is not None:
        from sparsernn.checkpoint import atomic_write_text

        atomic_write_text(out_json, json.dumps({label: s.to_dict() for label, s in spectra.items()}, indent=1))
    if plot is not None:
        from sparsernn.plots import plot_spectra

        title = f"Lyapunov spectra: K={samples}, T={steps}, state {state}, basis {basis}"
        out.print(f"plot: {plot_spectra(spectra, plot, title=title)}")


def _multiply_adds(model) -> int:
    from sparsernn.models.stack import multiply_adds

    return multiply_adds(model.recurrent_stack(), model.decoder.in_features, model.decoder.out_features)


@app.command()
def compact(
    ckpt: Annotated[Path, typer.Argument(help="checkpoint or run directory (best) with zeroed ISS components")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="compacted checkpoint (.safetensors)")],
    plots: Annotated[Optional[Path], typer.Option(help="directory for the zero-pattern and group-norm plots")] = None,
) -> None:
    """Remove every all-zero ISS component: a smaller dense model of plain nn.LSTM/nn.Linear modules."""
    from sparsernn.models import count_parameters
    from sparsernn.sparsity.iss import compact as compact_model
    from sparsernn.train import BEST, load_model, save_model

    path = ckpt / BEST if ckpt.is_dir() else ckpt
    model, cfg, vocab, meta = load_model(path)
    try:
        small = compact_model(model)
    except ValueError as exc:
        raise SparsernnError(f"{path}: {exc}") from None
    small_cfg = cfg.model_copy(deep=True)
    small_cfg.model.hidden_sizes = small.hidden_sizes
    small_cfg.model.embedding_size = small.embedding_size
    small_cfg.sparsity.method = "dense"
    small_cfg.sparsity.lasso_lambda = None
    table = Table(title=f"compacted {path} -> {out_path}")
    for column in ("", "hidden sizes", "parameters", "mult-adds / token"):
        table.add_column(column, justify="right")
    before, after = _multiply_adds(model), _multiply_adds(small)
    table.add_row("before", ",".join(map(str, model.hidden_sizes)), f"{count_parameters(model):,}", f"{before:,}")
    table.add_row("after", ",".join(map(str, small.hidden_sizes)), f"{count_parameters(small):,}", f"{after:,}")
    table.add_row("ratio", "", f"{count_parameters(model) / count_parameters(small):.2f}x", f"{before / after:.2f}x")
    save_model(out_path, small, {**meta, "config": small_cfg.to_dict(), "compacted_from": str(path)})
    out.print(table)
    if plots is not None:
        from sparsernn.plots import plot_group_norms, plot_zero_pattern
        from sparsernn.sparsity.iss import group_sq_norms

        norms = {f"layer {n + 1}": sq.sqrt() for n, sq in enumerate(group_sq_norms(model))}
        out.print(f"plots: {plot_zero_pattern(model, plots / 'zero_pattern.png')}, "
                  f"{plot_group_norms(norms, plots / 'group_norms.png')}")


@data_app.command("verify")
def data_verify(
    data_dir: Annotated[Optional[str], typer.Option(help="PTB directory [default: searched]")] = None,
) -> None:
    """Check the PTB files against their SHA-256 checksums and read them."""
    from sparsernn.data import find_corpus, load_corpus, verify_files
    from sparsernn.errors import DataError

    directory = Path(data_dir) if data_dir else find_corpus("ptb")
    if directory is None:
        raise DataError("no PTB corpus found; pass --data-dir or run `sparsernn data download`")
    digests = verify_files(directory)
    corpus = load_corpus(directory)
    table = Table(title=f"{directory}: standard PTB, checksums verified")
    for column in ("file", "tokens (with <eos>)", "sha256"):
        table.add_column(column)
    for split, (name, digest) in zip(("train", "valid", "test"), digests.items()):
        table.add_row(name, f"{corpus.split(split).numel():,}", digest[:16] + "...")
    out.print(table)
    out.print(f"vocabulary: {len(corpus.vocab):,} words")


@data_app.command("download")
def data_download(
    dest: Annotated[Path, typer.Option(help="where to put ptb.*.txt")] = Path("~/.cache/sparsernn/data/ptb"),
    url: Annotated[str, typer.Option(help="archive URL (file:// works)")] = "",
) -> None:
    """Download Mikolov's PTB archive, extract the LM files and verify their checksums."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from sparsernn.data import PTB_URL, download_ptb

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=err,
                  disable=not err.is_terminal) as bar:
        task = bar.add_task("PTB", total=None)
        target = download_ptb(dest, url or PTB_URL, progress=lambda done, total: bar.update(task, completed=done,
                                                                                        total=total))
    out.print(f"PTB verified in {target}; use --data-dir {target} or SPARSERNN_DATA={target.parent}")


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="print the version")] = False) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit()


def main() -> None:
    try:
        app()
    except SparsernnError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
