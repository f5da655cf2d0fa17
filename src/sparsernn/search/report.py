"""What a hyperpruning search shows: the report (``search_report``), the leaderboard, ``report.json`` and
its plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from sparsernn.files import atomic_write_text
from sparsernn.search.ledger import Ledger
from sparsernn.tasks.base import Metric, format_metric

if TYPE_CHECKING:
    from sparsernn.search.study import CandidateStore


def search_report(store: CandidateStore, settings: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Where the search stands: candidates, winner and its test metrics, budget, overhead, time to target
    (``settings``: the search's ``SearchSettings``)."""
    rows = candidate_rows(store)
    return {
        "settings": settings.model_dump(mode="json"),
        "space": store.space.model_dump(mode="json"),
        "phase": state["phase"],
        "metric": {"name": store.metric.name, "goal": store.metric.goal},
        "winner": state.get("winner"),
        "winner_config": store.candidate_config(state["winner"]).to_dict() if state.get("winner") else None,
        "best_seen": best_seen(rows, store.metric),
        "reference": reference_summary(store, state),
        "test": state.get("test"),
        "test_seconds": state.get("test_seconds"),
        "candidates": rows,
        "budget": state["budget"],
        "compute_seconds": state["compute_seconds"],
        "search_overhead": Ledger.summary(state),
        "time_to_target": state["time_to_target"],
        "reference_dir": str(store.reference_dir),
    }


def reference_summary(store: CandidateStore, state: dict[str, Any]) -> dict[str, Any] | None:
    """The dense reference's validation metric per epoch and its best (None: no reference trained)."""
    curve = {int(e): v for e, v in state.get("reference", {}).items()}
    if not curve:
        return None
    metric = store.metric
    return {f"val_{metric.name}": curve, f"best_val_{metric.name}": metric.best(curve.values()),
            "epochs": max(curve), "complete": max(curve) >= store.base.train.epochs}


def candidate_rows(store: CandidateStore) -> list[dict[str, Any]]:
    """One row per candidate: its point of the space, status, epoch, scores and validation metric
    (keys named after it: ``val_ppl`` and ``best_val_ppl`` for a language model)."""
    rows, key, metric = [], f"val_{store.metric.name}", store.metric
    for name, trial in sorted(store.candidates().items()):
        attrs = trial.user_attrs
        values = {int(e): v for e, v in attrs.get(key, {}).items()}
        rows.append({"name": name, "params": attrs.get("params", {}), "status": attrs.get("status", "alive"),
                     "round": attrs.get("round"), "epoch": attrs.get("epoch", 0),
                     "scores": {int(e): v for e, v in attrs.get("scores", {}).items()},
                     key: values, f"best_{key}": metric.best(values.values()) if values else None,
                     "eliminated": attrs.get("eliminated"), "failed": attrs.get("failed"),
                     "retries": attrs.get("retries", {})})
    return rows


def best_seen(rows: list[dict[str, Any]], metric: Metric) -> dict[str, Any] | None:
    """The best validation score any candidate showed, at any epoch: ``{name, epoch, value, status,
    eliminated}`` (``eliminated``: the epoch and rule that removed it, if they did)."""
    key, best = f"val_{metric.name}", None
    for row in rows:
        for epoch, value in sorted(row[key].items()):
            if math.isfinite(value) and (best is None or metric.better(value, best["value"])):
                best = {"name": row["name"], "epoch": epoch, "value": value, "status": row["status"],
                        "eliminated": row.get("eliminated")}
    return best


def describe_params(params: dict[str, Any]) -> str:
    """A candidate's point of the space in one line: ``method=rigl init=er death_rate=0.417``."""
    return " ".join(f"{k.removeprefix('sparsity.')}={v:.3g}" if isinstance(v, float) else
                    f"{k.removeprefix('sparsity.')}={v}" for k, v in params.items())


def leaderboard(rows: list[dict[str, Any]], sampler: str, rank_by: str, metric_name: str = "ppl",
                scores: dict[str, float] | None = None) -> Table:
    """Candidates by their latest score (distance or loss), then the rest; ``scores`` marks this round's.
    ``metric_name`` is the task's primary validation metric the rows carry (``best_val_<name>``)."""
    metric = RULE_LABELS.get(rank_by, f"{rank_by} score")
    best = f"best val {metric_name}"

    def latest(row):
        return row["scores"][max(row["scores"])] if row["scores"] else math.inf

    table = Table(title=f"hyperprune leaderboard ({sampler}, ranked by {metric})")
    for column in ("candidate", "configuration", "status", "epoch", metric, best):
        # the configuration wraps (never cut to "death_rate=0.…"), also in a narrow or non-terminal output
        table.add_column(column, justify="right" if column in ("epoch", metric, best) else "left",
                         overflow="fold", no_wrap=column != "configuration", min_width=24 if column ==
                         "configuration" else None)
    for row in sorted(rows, key=lambda r: (r["status"] in ("eliminated", "failed"), latest(r), r["name"])):
        score = latest(row)
        table.add_row(row["name"], describe_params(row["params"]), row["status"] + (" *" if scores and row["name"] in scores
                                                                                else ""),
                      str(row["epoch"]), "-" if not math.isfinite(score) else f"{score:.4g}",
                      format_metric(metric_name, row[f"best_val_{metric_name}"]))
    return table


METRIC_LABELS = {"ppl": "validation perplexity", "accuracy": "validation accuracy"}
RULE_LABELS = {"ls": "LS distance", "loss": "val loss", "pareto": "Pareto front + rank", "rank_sum": "rank sum",
               "ls_band": "LS rank in loss band"}


def write_report(out: Path, report: dict[str, Any]) -> dict[str, Any]:
    """``report.json`` and the plots in ``out/plots``; returns the report with the plots' paths."""
    report["plots"] = [str(p) for p in plot_search(out, report)]
    atomic_write_text(out / "report.json", json.dumps(_strict(report), indent=1, allow_nan=False, default=str))
    return report


def _strict(value: Any) -> Any:
    """JSON without NaN or infinities: a non-finite number is null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def plot_search(directory: Path, report: dict[str, Any]) -> list[Path]:
    """Candidates in LS space per round, score and validation metric per epoch, time to target."""
    from sparsernn.plots import pyplot

    plt = pyplot()
    out = directory / "plots"
    return [*_plot_ls_space(plt, directory, out), *_plot_series(plt, report, out),
            *_plot_time_to_target(plt, report, out)]


def _metric_label(report: dict[str, Any]) -> tuple[str, str]:
    metric = report.get("metric", {}).get("name", "ppl")
    return metric, METRIC_LABELS.get(metric, f"validation {metric}")


def _plot_ls_space(plt, directory: Path, out: Path) -> list[Path]:
    """Each round's candidates (and the reference) in LS space, their paths over epochs."""
    from sparsernn.plots import save_figure

    paths = []
    for points_file in sorted((directory / "ls_space").glob("round-*.json")):
        points = json.loads(points_file.read_text())
        fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
        for name, by_epoch in points.items():
            epochs = sorted(by_epoch, key=int)
            xs, ys = [by_epoch[e][0] for e in epochs], [by_epoch[e][1] for e in epochs]
            style = {"color": "black", "lw": 2, "zorder": 3} if name == "reference" else {"lw": 1, "alpha": 0.8}
            ax.plot(xs, ys, marker="o", ms=3, label=name, **style)
            ax.annotate(name, (xs[-1], ys[-1]), fontsize=6)
        ax.set_xlabel("LS PC 1")
        ax.set_ylabel("LS PC 2")
        ax.set_title(f"LS space, {points_file.stem} (paths over epochs; black: dense reference)", fontsize=9)
        fig.tight_layout()
        paths.append(save_figure(fig, plt, out / f"ls_space_{points_file.stem}.png"))
    return paths


def _plot_series(plt, report: dict[str, Any], out: Path) -> list[Path]:
    """Score and validation metric per epoch, one line per candidate (and the dense reference's metric)."""
    from matplotlib.ticker import MaxNLocator

    from sparsernn.plots import save_figure

    rows = report["candidates"]
    metric, label = _metric_label(report)
    reference = (report.get("reference") or {}).get(f"val_{metric}")
    rule = report["settings"]["rank_by"]
    paths = []
    for key, axis, filename in (("scores", RULE_LABELS.get(rule, f"{rule} score"), "score_vs_epoch.png"),
                                (f"val_{metric}", label, f"val_{metric}_vs_epoch.png")):
        if not any(row[key] for row in rows):
            continue  # nothing of this kind was measured (no LS distances without a reference)
        fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
        drawn = [row for row in rows if row[key]]
        for row, style in zip(drawn, line_styles(len(drawn))):
            series = row[key]
            epochs = sorted(series)
            ax.plot(epochs, [series[e] for e in epochs], ms=3, lw=1, label=f"{row['name']} ({row['status']})",
                    **style)
        if key != "scores" and reference:  # the dense model the candidates are pruned from
            epochs = sorted(reference, key=int)
            ax.plot([int(e) for e in epochs], [reference[e] for e in epochs], color="black", lw=2.5, zorder=3,
                    label="dense reference")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.5 on the axis
        ax.set_ylabel(axis)
        if key == "val_ppl":  # perplexities span orders of magnitude early in training
            log_axis(ax)
        ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        paths.append(save_figure(fig, plt, out / filename))
    return paths


def _plot_time_to_target(plt, report: dict[str, Any], out: Path) -> list[Path]:
    """The best validation metric any candidate showed against the compute spent, beside the winner and dense."""
    from sparsernn.plots import save_figure

    curve = report["time_to_target"]
    if not curve:
        return []
    metric, label = _metric_label(report)
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    ax.step([c[0] for c in curve] + [report["compute_seconds"]], [c[1] for c in curve] + [curve[-1][1]],
            where="post", label=f"best {label} any candidate showed")
    winner = next((r for r in report["candidates"] if r["name"] == report.get("winner")), None)
    if winner is not None and winner[f"best_val_{metric}"] is not None:
        ax.axhline(winner[f"best_val_{metric}"], color="tab:green", ls="--", lw=1.2,
                   label=f"winner {winner['name']}: {format_metric(metric, winner[f'best_val_{metric}'])}")
    if report.get("reference") and report["reference"]["complete"]:
        dense = report["reference"][f"best_val_{metric}"]
        ax.axhline(dense, color="black", ls=":", lw=1.2, label=f"dense reference: {format_metric(metric, dense)}")
    ax.set_xlabel("compute seconds spent (training, validation, spectra)")
    ax.set_ylabel(label)
    if metric == "ppl":
        log_axis(ax)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return [save_figure(fig, plt, out / "time_to_target.png")]


def log_axis(ax) -> None:
    """A log-scale y axis labelled in plain numbers (700, not 7 x 10^2)."""
    from matplotlib.ticker import ScalarFormatter

    ax.set_yscale("log")
    for set_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        formatter = ScalarFormatter()
        formatter.set_scientific(False)
        set_formatter(formatter)


def line_styles(count: int) -> list[dict[str, Any]]:
    """``count`` distinguishable line styles: 10 colours, then each with another dash and marker."""
    colours = [f"C{i}" for i in range(10)]
    dashes, markers = ["-", "--", ":", "-."], ["o", "s", "^", "D"]
    return [{"color": colours[i % 10], "ls": dashes[(i // 10) % 4], "marker": markers[(i // 10) % 4]}
            for i in range(count)]
