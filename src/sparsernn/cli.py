"""The ``sparsernn`` command line: parse, call the package, print.

``train``'s options that set one config field each are generated from ``TRAIN_OPTION_FIELDS`` and the
config's own field descriptions (one generic path: the text is parsed like a YAML value, comma lists
split, then the whole config is validated once); ``--set FIELD=VALUE`` reaches any field.
"""

from __future__ import annotations

import inspect
import sys
import time
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from sparsernn import __version__
from sparsernn.errors import SparsernnError
from sparsernn.files import refuse_overwriting_inputs

app = typer.Typer(
    help="sparsernn: sparse, small and fast recurrent sequence models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Get and check corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")
tag_app = typer.Typer(help="Sequence tagging (WSJ POS): train, evaluate, tag a text file.", no_args_is_help=True)
app.add_typer(tag_app, name="tag")
iss_app = typer.Typer(help="ISS tools: the zeroing threshold of a trained model, structure plots of a run.",
                      no_args_is_help=True)
app.add_typer(iss_app, name="iss")

out = Console()
err = Console(stderr=True)

# train option -> the config field it sets (help text and type come from the field itself)
TRAIN_OPTION_FIELDS = {
    "--data-dir": "data.dir",
    "--task": "data.task",
    "--batch-size": "data.batch_size",
    "--eval-batch-size": "data.eval_batch_size",
    "--bptt": "data.bptt",
    "--epoch-tokens": "data.epoch_tokens",
    "--train-tokens": "data.train_tokens",
    "--cell": "model.cell",
    "--hidden": "model.hidden_sizes",
    "--embedding-size": "model.embedding_size",
    "--dropout": "model.dropout",
    "--tie-weights": "model.tie_weights",
    "--init-range": "model.init_range",
    "--variational-dropout": "model.variational_dropout",
    "--dropout-input": "model.dropout_input",
    "--dropout-hidden": "model.dropout_hidden",
    "--dropout-output": "model.dropout_output",
    "--embedding-dropout": "model.embedding_dropout",
    "--weight-drop": "model.weight_drop",
    "--embedding-density": "model.embedding_density",
    "--embedding-sort": "model.embedding_sort",
    "--embedding-bins": "model.embedding_bins",
    "--projection-size": "model.projection_size",
    "--depth": "model.depth",
    "--transform-bias": "model.transform_bias",
    "--recurrent-dropout": "model.recurrent_dropout",
    "--segments": "model.segments",
    "--gamma": "model.gamma",
    "--block-form": "model.block_form",
    "--optimizer": "optim.name",
    "--lr": "optim.lr",
    "--momentum": "optim.momentum",
    "--weight-decay": "optim.weight_decay",
    "--clip": "optim.clip",
    "--lr-decay": "optim.lr_decay",
    "--decay-start-epoch": "optim.decay_start_epoch",
    "--nonmono": "optim.nonmono",
    "--method": "sparsity.method",
    "--density": "sparsity.density",
    "--prunable": "sparsity.prunable",
    "--sparse-init": "sparsity.init",
    "--death": "sparsity.death",
    "--growth": "sparsity.growth",
    "--redistribution": "sparsity.redistribution",
    "--death-rate": "sparsity.death_rate",
    "--death-rate-min": "sparsity.death_rate_min",
    "--update-every": "sparsity.update_every",
    "--stop-epoch": "sparsity.stop_epoch",
    "--start-epoch": "sparsity.start_epoch",
    "--end-epoch": "sparsity.end_epoch",
    "--lasso-lambda": "sparsity.lasso_lambda",
    "--lasso-update": "sparsity.lasso_update",
    "--zero-threshold": "sparsity.zero_threshold",
    "--group-biases": "sparsity.group_biases",
    "--target-units": "sparsity.target_units",
    "--target-multiply-adds": "sparsity.target_multiply_adds",
    "--target-epoch": "sparsity.target_epoch",
    "--init-from": "train.init_from",
    "--epochs": "train.epochs",
    "--seed": "train.seed",
    "--device": "train.device",
    "--log-interval": "train.log_interval",
    "--checkpoint-every": "train.checkpoint_every",
}


def _field(dotted: str):
    from sparsernn.config import RunConfig

    section, name = dotted.split(".")
    return RunConfig.model_fields[section].annotation.model_fields[name]


def _accepts(annotation: Any, kind: type) -> bool:
    """Whether a field annotation (``int | list[int] | None`` ...) admits ``kind`` (list or str)."""
    if annotation is kind or typing.get_origin(annotation) is kind:
        return True
    return any(_accepts(arg, kind) for arg in typing.get_args(annotation) if arg is not type(None))


def option_value(option: str, text: str) -> Any:
    """The value an option's text gives its config field: comma lists split for list fields, plain
    strings kept for string fields, anything else read as a YAML scalar (numbers, null, true)."""
    import yaml

    annotation = _field(TRAIN_OPTION_FIELDS[option]).annotation

    def scalar(part: str) -> Any:
        if annotation is str or annotation == Optional[str]:
            return part
        try:
            return yaml.safe_load(part)
        except yaml.YAMLError:
            return part

    # a list field splits on commas; one that also takes a plain number (lasso_lambda) splits only with one
    members = () if typing.get_origin(annotation) is list else typing.get_args(annotation)  # a union's members
    scalar_too = any(arg in (int, float) for arg in members)
    if _accepts(annotation, list) and ("," in text or not scalar_too):
        parts = [p.strip() for p in text.split(",")]
        if not all(parts):
            raise SparsernnError(f"{option}: expected a comma-separated list without empty items, got {text!r}")
        return [scalar(p) for p in parts]
    return scalar(text)


def _check_option(option: str, text: Any, value: Any) -> None:
    """The option's own value checked against its field alone, so a bad one is named by its option."""
    from sparsernn.config import validate
    from sparsernn.errors import ConfigError

    section, name = TRAIN_OPTION_FIELDS[option].split(".")
    try:
        validate({section: {name: value}}, "")
    except ConfigError as exc:
        problem = str(exc).removeprefix(": ")
        if problem.startswith(f"{section}.{name}"):  # not a problem of the defaults it was checked with
            raise SparsernnError(f"{option} {text!r}: {problem}") from None


def _train_option(option: str, dotted: str) -> inspect.Parameter:
    """A ``train`` parameter for one config field, with the field's description as its help."""
    info = _field(dotted)
    section = dotted.split(".")[0]
    help_text = info.description or ""
    if dotted == "sparsity.method":
        from sparsernn.sparsity import METHODS

        help_text = " | ".join(METHODS.names())
    elif dotted == "model.cell":
        from sparsernn.models.cells import CELLS

        help_text = " | ".join(CELLS.names())
    if info.annotation is bool:
        kind, decl = Optional[bool], typer.Option(f"{option}/--no-{option[2:]}", help=help_text,
                                                  rich_help_panel=f"Config: {section}")
    else:
        kind, decl = Optional[str], typer.Option(option, help=help_text, rich_help_panel=f"Config: {section}",
                                                 metavar=dotted.split(".")[1].upper())
    name = option[2:].replace("-", "_")
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, decl])


def _train(
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

    from sparsernn.config import parse_override, resolve_config
    from sparsernn.models import count_parameters
    from sparsernn.tasks import load_data
    from sparsernn.progress import default_reporter
    from sparsernn.runs import RunDir, resume_config
    from sparsernn.sparsity import resolve_method
    from sparsernn.train import Trainer

    overrides: dict[str, Any] = dict(parse_override(item) for item in set_ or [])
    for option, dotted in TRAIN_OPTION_FIELDS.items():
        value = fields[option[2:].replace("-", "_")]
        if value is not None:
            overrides[dotted] = value if isinstance(value, bool) else option_value(option, value)
            _check_option(option, value, overrides[dotted])
    if sparsity is not None:
        if "sparsity.density" in overrides:
            raise SparsernnError("give --density or --sparsity, not both")
        if not 0.0 <= sparsity < 1.0:
            raise SparsernnError(f"--sparsity: expected a fraction in [0, 1), got {sparsity}")
        overrides["sparsity.density"] = round(1.0 - sparsity, 12)

    if resume is not None:
        if preset or config or out_dir:
            raise SparsernnError("--resume takes the run's own config and directory; drop --preset/--config/--out")
        run = RunDir(resume)
        if not run.has_run:
            raise SparsernnError(f"{resume}: no run to resume (no last.safetensors)")
        cfg = resume_config(run, overrides).config
    else:
        cfg = resolve_config(preset or (None if config else "ptb-small"), config, overrides)
        name = preset or (config.stem if config else "ptb-small")
        run = RunDir(out_dir or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if run.has_run:
            raise SparsernnError(f"{run}: holds a run already; continue it with --resume {run} or pick another --out")
    try:
        cfg = resolve_method(cfg)
    except SparsernnError as exc:  # name the option when the field came from one
        options = {dotted: option for option, dotted in TRAIN_OPTION_FIELDS.items()
                   if fields[option[2:].replace("-", "_")] is not None}
        field = str(exc).partition(":")[0]
        raise SparsernnError(f"{options[field]}: {exc}" if field in options else str(exc)) from None
    if print_config:
        out.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return
    reporter = default_reporter()
    corpus, corpus_dir, note = load_data(cfg)
    if note:
        reporter.message(f"[yellow]note:[/] {note}")
    run.create()  # before any work: a run directory that cannot be made is said before anything else
    if resume is None:
        cfg.data.dir = str(corpus_dir.resolve())  # the run records exactly which corpus it used
        trainer = Trainer(cfg, corpus, run.path, reporter=reporter)
    else:
        trainer = Trainer.open(run.path, corpus, overrides=overrides, reporter=reporter)
    for split in ("valid", "test"):  # the splits fit() evaluates: one too small is refused before anything is said
        trainer.task.check_split(split)
    if resume is not None:
        if trainer.complete:
            reporter.message(f"{run}: the run is complete ({trainer.horizon} of {trainer.horizon} epochs)")
        else:
            reporter.message(f"resuming {run} at epoch {trainer.epoch}, step {trainer.step_in_epoch}")
    reporter.message(
        f"{cfg.model.cell} {'x'.join(map(str, cfg.model.hidden_sizes))}, {count_parameters(trainer.model):,} "
        f"parameters, {trainer.task.describe()}; {trainer.steps_per_epoch} steps/epoch on {trainer.device}; "
        f"run dir {run}"
    )
    try:
        result = trainer.fit(test=True)
    except KeyboardInterrupt:
        err.print(f"interrupted; continue with: sparsernn train --resume {run}")
        raise typer.Exit(130) from None
    _print_results({split: result[f"{prefix}_{trainer.task.primary.name}"] for split, prefix in
                    (("valid", "val"), ("test", "test"))}, f"best epoch {result['best_epoch']}",
                   trainer.task.primary.name)
    out.print(f"run dir {run}; corpus {corpus_dir}", soft_wrap=True)


_fixed = inspect.signature(_train, eval_str=True)
_train.__signature__ = _fixed.replace(parameters=[
    *(p for p in _fixed.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD),
    *(_train_option(option, dotted) for option, dotted in TRAIN_OPTION_FIELDS.items())])
_train.__annotations__ = {p.name: p.annotation for p in _train.__signature__.parameters.values()}
app.command("train")(_train)


def _tag_train(**fields: Any) -> None:
    """Train a sequence tagger (preset pos-tagger unless --preset/--config say otherwise) and report its
    validation and test accuracy; every option of `sparsernn train` applies."""
    if fields.get("preset") is None and fields.get("config") is None and fields.get("resume") is None:
        fields["preset"] = "pos-tagger"
    _train(**fields)


_tag_train.__signature__ = _train.__signature__
_tag_train.__annotations__ = dict(_train.__annotations__)
tag_app.command("train")(_tag_train)


# hyperprune option -> the SearchSettings field it sets
SEARCH_OPTION_FIELDS = {f"--{name.replace('_', '-')}": name for name in
                        ("sampler", "n", "e0", "ei", "survivors", "rank_by", "strategy", "distance", "k", "state",
                         "samples", "steps", "seed", "workers")}


# hyperprune option -> the ExecutorSettings field it sets (where candidates train; allowed with --resume)
EXECUTOR_OPTION_FIELDS = {f"--{name.replace('_', '-')}": name for name in
                          ("executor", "address", "cpus_per_candidate", "gpus_per_candidate", "retries")}


def _settings_from_options(model, options: dict[str, str], fields: dict[str, Any]):
    """``model`` (a pydantic settings class) from the options given; a bad value is one line naming its option."""
    from pydantic import ValidationError

    from sparsernn.files import load_yaml

    values = {}
    for option, name in options.items():
        text = fields[name]
        if text is not None:
            values[name] = None if (name == "k" and text == "all") else \
                text if name in ("address", "rank_by") else load_yaml(text, option)
    try:
        return model(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        option = next((o for o, n in options.items() if n == name), name)
        message = error["msg"].removeprefix("Value error, ")
        raise SparsernnError(f"{option + ': ' if option else ''}{message}"
                             + (f" (got {error.get('input')!r})" if option else "")) from None


def _search_settings(fields: dict[str, Any]):
    """SearchSettings from the options given; a bad value is one line naming its option."""
    from sparsernn.search import SearchSettings

    return _settings_from_options(SearchSettings, SEARCH_OPTION_FIELDS, fields)


def _hyperprune(
    space: Annotated[str, typer.Option(help="search space: a preset in configs/search/ (demo, paper) or a YAML file")]
    = "demo",
    preset: Annotated[Optional[str], typer.Option(help="run preset of the model and schedule [default: "
                                                       "hyperprune-demo]")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML run config, over the preset")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="any run config field: FIELD=VALUE")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="corpus directory [default: PTB if found, else generated]")]
    = None,
    epochs: Annotated[Optional[int], typer.Option(help="the schedule's length, for every candidate")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="search directory [default: "
                                                                        "runs/hyperprune-TIME]")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="continue the search in this directory")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Optuna storage URL [default: sqlite in the search "
                                                        "directory]")] = None,
    reference_dir: Annotated[Optional[Path], typer.Option(help="cache of dense references [default: "
                                                               "references/ beside the search directory]")] = None,
    **fields: Any,
) -> None:
    """Hyperpruning: search pruning methods and their settings, guided by Lyapunov spectra (LSH).

    Candidates train a few epochs; each round drops the half farthest from the dense reference in LS space and adds new ones proposed from what was learned; the survivors train to the end and the best by the task's validation metric wins (perplexity for a language model, accuracy for a tagger; its test score is measured once).

    Example: sparsernn hyperprune --space paper --preset ptb-small --sampler grid --e0 2 --survivors 3 --out runs/hp
    """
    from sparsernn.config import check_field, parse_override, resolve_config
    from sparsernn.errors import memory_for
    from sparsernn.progress import default_reporter
    from sparsernn.search import Search, load_space
    from sparsernn.search.cluster import ExecutorSettings, make_executor
    from sparsernn.tasks import build_task, load_data

    reporter = default_reporter()
    placement = _settings_from_options(ExecutorSettings, EXECUTOR_OPTION_FIELDS, fields)
    if resume is not None:
        if any(v is not None for v in (preset, config, set_, data_dir, epochs, out_dir)) or \
                any(fields[name] is not None for name in SEARCH_OPTION_FIELDS.values()) or space != "demo":
            raise SparsernnError("--resume continues the search as it was defined; give no other option than "
                                 "--storage and where candidates train (" + ", ".join(EXECUTOR_OPTION_FIELDS) + ")")
        search = Search.resume(resume, storage=storage, reporter=reporter)
    else:
        settings = _search_settings(fields)
        search_space = load_space(space)
        overrides: dict[str, Any] = dict(parse_override(item) for item in set_ or [])
        if epochs is not None:
            overrides["train.epochs"] = epochs
        base = resolve_config(preset or ("hyperprune-demo" if config is None else None), config, overrides)
        if data_dir is not None:
            check_field("data.dir", data_dir, "--data-dir")
        base.data.dir = data_dir or base.data.dir
        corpus, corpus_dir, note = load_data(base)  # read now: a corpus that is not there is said before any work
        if settings.ls_options() is not None:  # so are spectra whose input sequences it cannot give
            what = f"--samples {settings.samples}, --steps {settings.steps}"
            try:
                with memory_for(what):
                    build_task(base, corpus, "cpu").lyapunov_inputs(settings.samples, settings.steps)
            except ValueError as exc:
                raise SparsernnError(f"{what}: {exc}") from None
        if note:
            reporter.message(f"[yellow]note:[/] {note}")
        base.data.dir = str(corpus_dir.resolve())
        search_dir = out_dir or Path("runs") / f"hyperprune-{time.strftime('%Y%m%d-%H%M%S')}"
        search = Search(search_dir, search_space, base, settings, storage=storage, reference_dir=reference_dir,
                        reporter=reporter)
        reporter.message(f"hyperprune: {len(search_space.grid()) if settings.sampler == 'grid' else settings.n} "
                         f"candidates, {settings.sampler} sampler, ranked by {settings.rank_by}, schedule "
                         f"{base.train.epochs} epochs; corpus {corpus_dir}; search dir {search_dir}")
    if placement.executor != "local":
        search.executor = make_executor(placement)
    try:
        report = search.run()
    except KeyboardInterrupt:
        err.print(f"interrupted; continue with: sparsernn hyperprune --resume {search.out}")
        raise typer.Exit(130) from None
    out.print(search.leaderboard())
    for line in winner_lines(report):
        out.print(line, soft_wrap=True)
    overhead = report["search_overhead"]
    out.print(f"compute {report['compute_seconds']:.0f} s; search overhead {100 * overhead['fraction']:.1f}% "
              f"(spectra {overhead['ls_seconds']:.1f} s, ranking and sampling "
              f"{overhead['ranking_and_sampling_seconds']:.1f} s)", soft_wrap=True)
    out.print(f"report {search.out / 'report.json'}; plots " + ", ".join(report["plots"]), soft_wrap=True)


def winner_lines(report: dict[str, Any]) -> list[str]:
    """The search's result in words: the winner, the dense reference beside it, and the best model
    the search saw when that is not the winner (by how much, and what removed it)."""
    from sparsernn.search.report import describe_params
    from sparsernn.tasks import format_metric

    metric = report["metric"]["name"]
    rows = {r["name"]: r for r in report["candidates"]}
    winner = rows[report["winner"]]
    value = winner[f"best_val_{metric}"]
    test = (report["test"] or {}).get(f"test_{metric}", float("nan"))
    point = describe_params(winner["params"])
    if "method=" not in point:  # the method was fixed by the space
        point = f"method={report['winner_config']['sparsity']['method']} {point}"
    lines = [f"winner {report['winner']}: {point}; valid {metric} {format_metric(metric, value)}, test {metric} "
             f"{format_metric(metric, test)}"]
    reference = report.get("reference")
    if reference and reference["complete"]:
        dense = reference[f"best_val_{metric}"]
        lines.append(f"dense reference: valid {metric} {format_metric(metric, dense)}; the winner is "
                     f"{100 * (value / dense - 1):+.1f}% from dense")
    seen = report.get("best_seen")
    if seen and seen["name"] != report["winner"] and (value - seen["value"]) * (1 if report["metric"]["goal"] ==
                                                                               "min" else -1) > 0:
        why = (f"eliminated at epoch {seen['eliminated']['epoch']} by rule {seen['eliminated']['rule']}"
               if seen.get("eliminated") else seen["status"])
        lines.append(f"best model seen: {seen['name']} at epoch {seen['epoch']}, valid {metric} "
                     f"{format_metric(metric, seen['value'])} ({why}); the winner is "
                     f"{format_metric(metric, abs(value - seen['value']))} worse")
    return lines


def _search_option(option: str, name: str, cluster: bool = False) -> inspect.Parameter:
    from sparsernn.search import SearchSettings
    from sparsernn.search.cluster import ExecutorSettings

    info = (ExecutorSettings if cluster else SearchSettings).model_fields[name]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[str], typer.Option(option, help=info.description, rich_help_panel="Cluster" if cluster else "Search",
                                    metavar=name.upper())])


_fixed_search = inspect.signature(_hyperprune, eval_str=True)
_hyperprune.__signature__ = _fixed_search.replace(parameters=[
    *(p for p in _fixed_search.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD),
    *(_search_option(option, name) for option, name in SEARCH_OPTION_FIELDS.items()),
    *(_search_option(option, name, cluster=True) for option, name in EXECUTOR_OPTION_FIELDS.items())])
_hyperprune.__annotations__ = {p.name: p.annotation for p in _hyperprune.__signature__.parameters.values()}
app.command("hyperprune")(_hyperprune)


def _print_results(values: dict[str, dict[str, float] | float], title: str, metric: str = "perplexity") -> None:
    """A table of split -> metrics; a split's value is one number (``metric``) or named metrics."""
    from sparsernn.tasks import format_metric

    rows = {split: v if isinstance(v, dict) else {metric: v} for split, v in values.items()}
    names = list(dict.fromkeys(name for metrics in rows.values() for name in metrics))
    table = Table(title=title)
    table.add_column("split")
    for name in names:
        table.add_column(name, justify="right")
    for split, metrics in rows.items():
        table.add_row(split, *(format_metric(n, metrics[n]) for n in names))
    out.print(table)


def _model_and_task(ckpt: Path, data_dir: str | None, device, corpora: dict | None = None,
                    eval_batch_size: int | None = None):
    """A trained model and the task (its data) it is used with; the task checks they belong together."""
    from sparsernn.config import check_field
    from sparsernn.runs import load_model, model_path
    from sparsernn.tasks import build_task, load_data

    if data_dir is not None:
        check_field("data.dir", data_dir, "--data-dir")
    path = model_path(ckpt)
    model, cfg, _, meta = load_model(path, device)
    if data_dir is not None:
        cfg.data.dir = data_dir
    corpora = {} if corpora is None else corpora
    key = (cfg.data.task, cfg.data.dir)
    if key not in corpora:
        corpus, _, note = load_data(cfg)
        if note:
            err.print(f"note: {note}")
        corpora[key] = corpus
    if eval_batch_size is not None:
        cfg.data.eval_batch_size = eval_batch_size
    task = build_task(cfg, corpora[key], device)
    task.check_meta(meta, path)
    return path, model, cfg, task


@app.command("eval")
def eval_(
    ckpt: Annotated[Path, typer.Argument(help="checkpoint (.safetensors) or run directory (uses best)")],
    data_dir: Annotated[Optional[str], typer.Option(help="corpus directory [default: the one it trained on]")] = None,
    split: Annotated[list[str], typer.Option(help="valid, test and/or train (the text it trained on: "
                                             "memorisation)")] = ["valid", "test"],  # noqa: B006
    batch_size: Annotated[Optional[int], typer.Option(help="streams [default: the run's eval batch size]")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """A trained checkpoint's metrics on valid/test/train: perplexity and next-word accuracy (argmax) for
    language models, token accuracy for taggers."""
    from sparsernn.train import resolve_device

    for name in split:
        if name not in ("valid", "test", "train"):
            raise SparsernnError(f"--split: expected valid, test or train, got {name!r}")
    if batch_size is not None and batch_size < 1:
        raise SparsernnError(f"--batch-size: expected a positive number, got {batch_size}")
    dev = resolve_device(device, "--device")
    path, model, _, task = _model_and_task(ckpt, data_dir, dev, eval_batch_size=batch_size)
    primary = task.primary.name
    results = {}
    for name in split:
        task.check_split(name)
        metrics = task.evaluate(model, name)
        results[name] = {primary: metrics[primary], **{k: v for k, v in metrics.items() if k not in ("loss", primary)}}
    _print_results(results, str(path), primary)


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
    orthonormalization: Annotated[str, typer.Option(
        help="householder: QR every time; cholesky: CholeskyQR2 (GEMM-bound), Householder where it breaks down")
    ] = "householder",
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

    from sparsernn.dynamics import lyapunov_spectrum
    from sparsernn.errors import memory_for
    from sparsernn.train import resolve_device

    for option, value, allowed in (("--state", state, ("hc", "h")), ("--basis", basis, ("layers", "stack")),
                                   ("--log-base", log_base, ("e", "2")),
                                   ("--orthonormalization", orthonormalization, ("householder", "cholesky"))):
        if value not in allowed:
            raise SparsernnError(f"{option}: expected {' or '.join(allowed)}, got {value!r}")
    for option, value in (("--samples", samples), ("--steps", steps), ("--qr-every", qr_every)):
        if value < 1:
            raise SparsernnError(f"{option}: expected a positive number, got {value}")
    dev = resolve_device(device, "--device")
    for option, output in (("--out", out_json), ("--plot", plot)):
        if output is not None:
            refuse_overwriting_inputs(option, output, ckpts)
    spectra, corpora = {}, {}
    for ckpt in ckpts:
        path, model, _, task = _model_and_task(ckpt, data_dir, dev, corpora)
        try:
            with memory_for(f"--samples {samples}, --steps {steps}"):
                sequences = task.lyapunov_inputs(samples, steps)
                spectrum = lyapunov_spectrum(model, sequences, k=k, state=state, basis=basis, warmup=warmup,
                                             qr_every=qr_every, orthonormalization=orthonormalization,
                                             dtype=torch.float32 if float32 else torch.float64,
                                             log_base=math.e if log_base == "e" else 2.0)
        except ValueError as exc:
            raise SparsernnError(f"{path}: {exc}") from None
        spectra[str(ckpt)] = spectrum
        if spectrum.fallbacks:
            err.print(f"note: {path}: CholeskyQR2 broke down (ill-conditioned J Q) at {spectrum.fallbacks} step(s); "
                      f"Householder QR was used there", soft_wrap=True)
    table = Table(title=f"Lyapunov spectra: K={samples}, T={steps}, warm-up {warmup}, state {state}, basis {basis}")
    for column in ("model", "exponents", "max", "mean", "variance", "positive", "-inf"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for label, spectrum in spectra.items():
        f = spectrum.features
        stats = ["-" if f[name] is None else f"{f[name]:.4f}" for name in ("max", "mean", "variance")]
        table.add_row(label, str(spectrum.exponents.numel()), *stats, str(f["num_positive"]), str(f["num_minus_inf"]))
    out.print(table)
    if out_json is not None:
        from sparsernn.files import atomic_write_text

        atomic_write_text(out_json, json.dumps({label: s.to_dict() for label, s in spectra.items()}, indent=1,
                                               allow_nan=False))
    if plot is not None:
        from sparsernn.plots import plot_spectra

        title = f"Lyapunov spectra: K={samples}, T={steps}, state {state}, basis {basis}"
        out.print(f"plot: {plot_spectra(spectra, plot, title=title)}")


@app.command()
def compact(
    ckpt: Annotated[Path, typer.Argument(help="checkpoint or run directory (best) with zeroed ISS components")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="compacted checkpoint (.safetensors)")],
    plots: Annotated[Optional[Path], typer.Option(help="directory for the zero-pattern and group-norm plots")] = None,
    timing: Annotated[bool, typer.Option("--timing/--no-timing", help="measure the inference speed-up (batch 10, "
                                                                      "30 steps, models interleaved)")] = True,
) -> None:
    """Remove every all-zero ISS component: a smaller dense model of plain nn.LSTM/nn.Linear modules."""
    from sparsernn.runs import load_model, model_path, save_model
    from sparsernn.sparsity.iss import compact as compact_model
    from sparsernn.errors import Failure
    from sparsernn.sparsity.iss import compacted_config, nothing_to_remove, removable_units, size_summary

    path = model_path(ckpt)
    refuse_overwriting_inputs("--out", out_path, [ckpt, path])
    model, cfg, _, meta = load_model(path)
    try:
        removable = removable_units(model)
        if not any(bool(units.any()) for units in removable):
            raise Failure(f"{path}: {nothing_to_remove(model, cfg.sparsity.zero_threshold)}")
        small = compact_model(model, [~units for units in removable])
    except ValueError as exc:
        raise SparsernnError(f"{path}: {exc}") from None
    before, after = size_summary(model), size_summary(small)
    timed: dict[str, float] = {}
    if timing:
        from sparsernn.timing import inference_seconds

        timed = inference_seconds({"before": model, "after": small}, model.vocab_size)
    table = Table(title=f"compacted {path} -> {out_path}")
    for column in ("", "hidden sizes", "parameters", "mult-adds / token", *(["inference (measured)"] if timed else [])):
        table.add_column(column, justify="right")
    for label, row in (("before", before), ("after", after)):
        table.add_row(label, ",".join(map(str, row["hidden_sizes"])), f"{row['parameters']:,}",
                      f"{row['multiply_adds']:,}", *([f"{1000 * timed[label]:.2f} ms"] if timed else []))
    table.add_row("ratio", "", f"{before['parameters'] / after['parameters']:.2f}x",
                  f"{before['multiply_adds'] / after['multiply_adds']:.2f}x",
                  *([f"{timed['before'] / timed['after']:.2f}x faster"] if timed else []))
    save_model(out_path, small, {**meta, "config": compacted_config(cfg, small).to_dict(), "compacted_from": str(path)})
    out.print(table)
    if plots is not None:
        from sparsernn.plots import plot_group_norms, plot_zero_pattern
        from sparsernn.sparsity.iss import group_sq_norms

        norms = {f"layer {n + 1}": sq.sqrt() for n, sq in enumerate(group_sq_norms(model))}
        out.print(f"plots: {plot_zero_pattern(model, plots / 'zero_pattern.png')}, "
                  f"{plot_group_norms(norms, plots / 'group_norms.png')}")


@tag_app.command("eval")
def tag_eval(
    ckpt: Annotated[Path, typer.Argument(help="tagger checkpoint or run directory (uses best)")],
    data_dir: Annotated[Optional[str], typer.Option(help="CoNLL directory [default: the one it trained on]")] = None,
    split: Annotated[list[str], typer.Option(help="valid, test and/or train")] = ["valid", "test"],  # noqa: B006
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Token accuracy of a trained tagger on valid/test/train (padding excluded)."""
    eval_(ckpt, data_dir=data_dir, split=split, batch_size=None, device=device)


@tag_app.command("predict")
def tag_predict(
    ckpt: Annotated[Path, typer.Argument(help="tagger checkpoint or run directory (uses best)")],
    text: Annotated[Path, typer.Argument(help="text file: one sentence a line, tokens separated by spaces")],
    out_path: Annotated[Optional[Path], typer.Option("--out", "-o", help="write token<TAB>tag (CoNLL) here "
                                                                        "[default: print]")] = None,
) -> None:
    """Tag every sentence of a text file; unknown words are tagged through their unknown-word class's
    embedding (by shape: capitals, digits, hyphen, suffix)."""
    import torch

    from sparsernn.data.conll import word_id
    from sparsernn.files import atomic_write_text
    from sparsernn.runs import load_model, model_path

    path = model_path(ckpt)
    if out_path is not None:
        refuse_overwriting_inputs("--out", out_path, [ckpt, path, text])
    model, cfg, _, meta = load_model(path)
    if "tags" not in meta:
        raise SparsernnError(f"{path}: not a tagger checkpoint (it has no tag set); train one with sparsernn tag train")
    try:
        lines = [line.split() for line in text.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SparsernnError(f"{text}: cannot be read as UTF-8 text ({exc.__class__.__name__})") from None
    if not lines:
        raise SparsernnError(f"{text}: no sentences (one a line expected)")
    ids = {w: i for i, w in enumerate(meta["vocab"])}
    model.eval()
    blocks = []
    with torch.inference_mode():
        for tokens in lines:
            words = torch.tensor([[word_id(t, ids)] for t in tokens])
            tags = model(words).argmax(-1)[:, 0].tolist()
            blocks.append("".join(f"{t}\t{meta['tags'][g]}\n" for t, g in zip(tokens, tags)))
    conll = "\n".join(blocks)
    if out_path is None:
        sys.stdout.write(conll)  # raw: the console would turn the tabs into spaces
    else:
        atomic_write_text(out_path, conll)
        out.print(f"tagged {len(lines)} sentences -> {out_path}")


@iss_app.command("tau")
def iss_tau(
    ckpt: Annotated[Path, typer.Argument(help="trained checkpoint or run directory (best), usually dense")],
    margin: Annotated[float, typer.Option(help="largest relative worsening of the validation metric allowed")] = 0.01,
    data_dir: Annotated[Optional[str], typer.Option(help="corpus directory [default: the one it trained on]")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """The ISS paper's zeroing threshold: the largest tau whose zeroing of |w| < tau keeps validation
    perplexity within --margin; use it as --zero-threshold with --lasso-update subgradient."""
    from sparsernn.sparsity.lasso import zeroing_threshold
    from sparsernn.train import resolve_device

    if not 0.0 <= margin < 1.0:
        raise SparsernnError(f"--margin: expected a fraction in [0, 1), got {margin}")
    path, model, _, task = _model_and_task(ckpt, data_dir, resolve_device(device, "--device"))
    primary = task.primary.name
    try:
        tau, trials = zeroing_threshold(model, lambda m: task.evaluate(m, "valid")[primary], margin, task.primary.goal)
    except ValueError as exc:
        raise SparsernnError(f"{path}: {exc}") from None
    table = Table(title=f"zeroing |w| < tau in {path} (validation {primary}, margin {margin:g})")
    for column in ("tau", "weights zeroed", f"valid {primary}"):
        table.add_column(column, justify="right")
    for trial in trials:
        table.add_row(f"{trial['tau']:.3g}", f"{trial['zeroed']:.1%}", f"{trial['score']:.3f}")
    out.print(table)
    out.print(f"tau = {tau:.4g}" + (f"   (train with --lasso-update subgradient --zero-threshold {tau:.4g})"
                                     if tau > 0 else "   (even the smallest threshold tried costs more than the margin)"))


@iss_app.command("plot")
def iss_plot(
    run_dir: Annotated[Path, typer.Argument(help="run directory of an iss or l1 run (or a checkpoint)")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="directory for the PNGs [default: RUN/plots]")] = None,
) -> None:
    """Structure plots: zero pattern of each recurrent matrix, component norms (final and over epochs),
    and the all-zero rows and columns that L1 reveals."""
    from sparsernn.plots import plot_group_norms, plot_norm_curves, plot_zero_lines, plot_zero_pattern
    from sparsernn.runs import RunDir, load_model, model_path
    from sparsernn.sparsity.iss import group_sq_norms, zero_lines

    path = model_path(run_dir)
    model, cfg, _, _ = load_model(path)
    out_dir = out_dir or (run_dir if run_dir.is_dir() else path.parent) / "plots"
    records = [r for r in RunDir(path.parent).records() if "iss_norms" in r]  # read (and checked) before any plot
    written = [plot_zero_pattern(model, out_dir / "zero_pattern.png")]
    norms = {f"layer {n + 1}": sq.clamp_min(0).sqrt() for n, sq in enumerate(group_sq_norms(model))}
    written.append(plot_group_norms(norms, out_dir / "group_norms.png"))
    if records:
        written.append(plot_norm_curves([r["epoch"] for r in records], [r["iss_norms"] for r in records],
                                        out_dir / "group_norms_over_epochs.png"))
    lines = zero_lines(model)
    written.append(plot_zero_lines(lines, out_dir / "zero_rows_columns.png"))
    table = Table(title=f"all-zero rows and columns in {path}")
    for column in ("matrix", "zero rows", "zero columns"):
        table.add_column(column, justify="right")
    for name, line in lines.items():
        table.add_row(name, f"{line['zero_rows']}/{line['rows']}", f"{line['zero_columns']}/{line['columns']}")
    out.print(table)
    out.print("plots: " + ", ".join(str(p) for p in written))


@app.command()
def match(
    dense: Annotated[str, typer.Option(help="the dense LSTM layer: INPUT,HIDDEN (e.g. 1150,1150)")],
    sparse: Annotated[str, typer.Option(help="the wider block-sparse layer: INPUT,HIDDEN (e.g. 1725,1725)")],
    segments: Annotated[int, typer.Option(help="parallel LSTMs in the block-sparse layer")] = 3,
) -> None:
    """Parameter matching (Demeester et al. 2018): the input-window fraction gamma that gives a wider
    block-sparse LSTM layer the parameter count of a dense one (PyTorch's two bias vectors counted)."""
    from sparsernn.models.cells.block_lstm import block_layout, block_parameters, dense_parameters, match_gamma

    def pair(option: str, text: str) -> tuple[int, int]:
        parts = text.split(",")
        if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise SparsernnError(f"{option}: expected INPUT,HIDDEN as two positive integers, got {text!r}")
        return int(parts[0]), int(parts[1])

    (i_d, h_d), (i_s, h_s) = pair("--dense", dense), pair("--sparse", sparse)
    if not 1 <= segments <= h_s:
        raise SparsernnError(f"--segments: expected 1..{h_s} (the sparse layer's units), got {segments}")
    try:
        gamma, difference = match_gamma(i_d, h_d, i_s, h_s, segments)
    except ValueError as exc:
        raise SparsernnError(str(exc)) from None
    layout = block_layout(i_s, h_s, segments, gamma)
    table = Table(title=f"block-sparse ({i_s}, {h_s}, N={segments}) with the parameters of dense ({i_d}, {h_d})")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("dense parameters", f"{dense_parameters(i_d, h_d):,}")
    table.add_row("gamma (window / input)", f"{gamma:.4f}")
    table.add_row("window", f"{layout[0].width} of {i_s} inputs")
    table.add_row("segments (units)", " + ".join(str(s.hidden) for s in layout))
    table.add_row("block-sparse parameters", f"{block_parameters(i_s, h_s, segments, gamma):,}")
    table.add_row("difference", f"{difference:+,} (the integer window closest in parameters)")
    out.print(table)
    out.print(f"train with --cell block_lstm --segments {segments} --gamma {gamma:.4f}")


@app.command()
def presets() -> None:
    """The run presets in configs/, each with its one-line description."""
    from sparsernn.config import list_presets, preset_description

    table = Table(title="presets (sparsernn train --preset NAME)")
    table.add_column("preset")
    table.add_column("what it is")
    for name in list_presets():
        table.add_row(name, preset_description(name))
    out.print(table)


@app.command()
def methods() -> None:
    """The sparsity methods (train --method NAME), each with its one-line description."""
    from sparsernn.sparsity import METHODS

    table = Table(title="sparsity methods (sparsernn train --method NAME)")
    table.add_column("method")
    table.add_column("what it is")
    table.add_column("settings it reads: default")
    for method in METHODS:
        settings = [f"{name}: {method.defaults[name]}" if name in method.defaults else name for name in method.fields]
        table.add_row(method.name, method.description, ", ".join(settings))
    out.print(table)
    out.print("stop_epoch defaults to the planned length (75% of it for rigl); gmp prunes until 75% of it",
              soft_wrap=True)


@app.command()
def cells() -> None:
    """The recurrent cell types (train --cell NAME), each with its one-line description."""
    from sparsernn.models.cells import CELLS

    table = Table(title="cell types (sparsernn train --cell NAME)")
    for column in ("cell", "what it is", "gates"):
        table.add_column(column)
    for cell in CELLS:
        table.add_row(cell.name, cell.description, " ".join(cell.gates))
    out.print(table)


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


def main(args: list[str] | None = None) -> None:
    """The command line: every problem ends in one line on stderr, ``error: ...``, and its exit code
    (2 for bad input or usage, 1 for work that failed)."""
    try:
        code = app(args=args, prog_name="sparsernn", standalone_mode=False)
    except SparsernnError as exc:
        _fail(str(exc), exc.exit_code)
    except Exception as exc:
        # usage errors of the command-line parser (unknown option, missing argument, not a number):
        # the parser's exceptions carry their one-line message and exit code
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        if not exc.format_message():  # help shown for a bare command: nothing went wrong
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}", exc.exit_code)
    sys.exit(code or 0)


def _fail(message: str, code: int) -> None:
    err.print(f"error: {' '.join(message.split())}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(code)
