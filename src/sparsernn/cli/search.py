"""The search: ``hyperprune``, and the result of a search in words."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from sparsernn.cli.app import out, resumable
from sparsernn.cli.options import (EXECUTOR_OPTION_FIELDS, SEARCH_OPTION_FIELDS, search_options,
                                   settings_from_options, with_options)
from sparsernn.errors import SparsernnError


def hyperprune(
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
    from sparsernn.progress import default_reporter
    from sparsernn.search import Search
    from sparsernn.search.cluster import ExecutorSettings, make_executor

    reporter = default_reporter()
    placement = settings_from_options(ExecutorSettings, EXECUTOR_OPTION_FIELDS, fields)
    if resume is not None:
        _refuse_redefining(space, (preset, config, set_, data_dir, epochs, out_dir), fields)
        search = Search.resume(resume, storage=storage, reporter=reporter)
    else:
        search = _new_search(space, preset, config, set_, data_dir, epochs, out_dir, storage, reference_dir, fields,
                             reporter)
    if placement.executor != "local":
        search.executor = make_executor(placement)
    with resumable(f"sparsernn hyperprune --resume {search.out}"):
        report = search.run()
    _print_report(search, report)


with_options(hyperprune, search_options())


def _refuse_redefining(space: str, definition: tuple, fields: dict[str, Any]) -> None:
    """A search is continued as it was defined: only its storage and where candidates train may be given."""
    if any(v is not None for v in definition) or \
            any(fields[name] is not None for name in SEARCH_OPTION_FIELDS.values()) or space != "demo":
        raise SparsernnError("--resume continues the search as it was defined; give no other option than "
                             "--storage and where candidates train (" + ", ".join(EXECUTOR_OPTION_FIELDS) + ")")


def _new_search(space: str, preset: str | None, config: Path | None, set_: list[str] | None, data_dir: str | None,
                epochs: int | None, out_dir: Path | None, storage: str | None, reference_dir: Path | None,
                fields: dict[str, Any], reporter):
    """A new search as the options define it; everything it needs is read and checked before it starts."""
    from sparsernn.config import parse_override
    from sparsernn.launch import search_base
    from sparsernn.runs import default_run_path
    from sparsernn.search import Search, SearchSettings, load_space

    settings = settings_from_options(SearchSettings, SEARCH_OPTION_FIELDS, fields)
    search_space = load_space(space)
    overrides: dict[str, Any] = dict(parse_override(item) for item in set_ or [])
    if epochs is not None:
        overrides["train.epochs"] = epochs
    spectra = (settings.samples, settings.steps) if settings.ls_options() is not None else None
    base, corpus_dir = search_base(preset, config, overrides, data_dir, spectra, reporter)
    search_dir = out_dir or default_run_path("hyperprune")
    search = Search(search_dir, search_space, base, settings, storage=storage, reference_dir=reference_dir,
                    reporter=reporter)
    reporter.message(f"hyperprune: {len(search_space.grid()) if settings.sampler == 'grid' else settings.n} "
                     f"candidates, {settings.sampler} sampler, ranked by {settings.rank_by}, schedule "
                     f"{base.train.epochs} epochs; corpus {corpus_dir}; search dir {search_dir}")
    return search


def _print_report(search, report: dict[str, Any]) -> None:
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
    winner = {r["name"]: r for r in report["candidates"]}[report["winner"]]
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
