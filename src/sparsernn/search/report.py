"""What a hyperpruning search shows: the leaderboard, ``report.json`` and its plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from sparsernn.files import atomic_write_text
from sparsernn.tasks.base import format_metric


def _describe(params: dict[str, Any]) -> str:
    return " ".join(f"{k.removeprefix('sparsity.')}={v:.3g}" if isinstance(v, float) else
                    f"{k.removeprefix('sparsity.')}={v}" for k, v in params.items())


def leaderboard(rows: list[dict[str, Any]], sampler: str, rank_by: str, metric_name: str = "ppl",
                scores: dict[str, float] | None = None) -> Table:
    """Candidates by their latest score (distance or loss), then the rest; ``scores`` marks this round's.
    ``metric_name`` is the task's primary validation metric the rows carry (``best_val_<name>``)."""
    metric = "LS distance" if rank_by == "ls" else "val loss"
    best = f"best val {metric_name}"

    def latest(row):
        return row["scores"][max(row["scores"])] if row["scores"] else math.inf

    table = Table(title=f"hyperprune leaderboard ({sampler}, ranked by {metric})")
    for column in ("candidate", "configuration", "status", "epoch", metric, best):
        table.add_column(column, justify="right" if column in ("epoch", metric, best) else "left")
    for row in sorted(rows, key=lambda r: (r["status"] in ("eliminated", "failed"), latest(r), r["name"])):
        score = latest(row)
        table.add_row(row["name"], _describe(row["params"]), row["status"] + (" *" if scores and row["name"] in scores
                                                                                else ""),
                      str(row["epoch"]), "-" if not math.isfinite(score) else f"{score:.4g}",
                      format_metric(metric_name, row[f"best_val_{metric_name}"]))
    return table


METRIC_LABELS = {"ppl": "validation perplexity", "accuracy": "validation accuracy"}


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
    from sparsernn.plots import pyplot, save_figure

    plt = pyplot()
    out = directory / "plots"
    rows = report["candidates"]
    metric = report.get("metric", {}).get("name", "ppl")
    label = METRIC_LABELS.get(metric, f"validation {metric}")
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
    for key, axis, filename in (("scores", "LS distance" if report["settings"]["rank_by"] == "ls" else "val loss",
                                 "score_vs_epoch.png"), (f"val_{metric}", label, f"val_{metric}_vs_epoch.png")):
        if not any(row[key] for row in rows):
            continue  # nothing of this kind was measured (no LS distances without a reference)
        fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
        for row in rows:
            series = row[key]
            if series:
                epochs = sorted(series)
                ax.plot(epochs, [series[e] for e in epochs], marker="o", ms=3, lw=1,
                        label=f"{row['name']} ({row['status']})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(axis)
        if key == "val_ppl":  # perplexities span orders of magnitude early in training
            ax.set_yscale("log")
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        paths.append(save_figure(fig, plt, out / filename))
    curve = report["time_to_target"]
    if curve:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        ax.step([c[0] for c in curve] + [report["compute_seconds"]], [c[1] for c in curve] + [curve[-1][1]],
                where="post")
        ax.set_xlabel("compute seconds spent (training, validation, spectra)")
        ax.set_ylabel(f"best {label} found")
        if metric == "ppl":
            ax.set_yscale("log")
        fig.tight_layout()
        paths.append(save_figure(fig, plt, out / "time_to_target.png"))
    return paths
