"""Density report of a masked model: per matrix, per gate for recurrent matrices, and in total."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from torch import nn

from sparsernn.models.discovery import declares_stack, discover
from sparsernn.sparsity.masks import MASK_SUFFIX


def density_report(model: nn.Module) -> dict[str, Any]:
    """``{"matrices": [...], "nonzero": n, "total": N, "density": n/N}`` from the model's mask buffers
    (empty matrices list for a model without masks)."""
    gates_of = {layer.module: layer.gates for layer in (discover(model) if declares_stack(model) else ())}
    rows = []
    for buffer_name, mask in model.named_buffers():
        if not buffer_name.endswith(MASK_SUFFIX):
            continue
        weight_name = buffer_name[: -len(MASK_SUFFIX)]
        module_name = weight_name.rpartition(".")[0]
        nonzero = int(mask.sum())
        row = {"name": weight_name, "shape": list(mask.shape), "nonzero": nonzero, "total": mask.numel(),
               "density": nonzero / mask.numel()}
        gates = gates_of.get(module_name)
        if gates and len(gates) > 1:
            blocks = mask.chunk(len(gates), dim=0)
            row["gates"] = {g: float(b.float().mean()) for g, b in zip(gates, blocks)}
        rows.append(row)
    nonzero = sum(r["nonzero"] for r in rows)
    total = sum(r["total"] for r in rows)
    return {"matrices": rows, "nonzero": nonzero, "total": total, "density": nonzero / total if total else 1.0}


def density_table(report: dict[str, Any], title: str = "sparsity") -> Table:
    table = Table(title=title)
    for column in ("matrix", "shape", "non-zero", "density", "per gate"):
        table.add_column(column, justify="left" if column in ("matrix", "per gate") else "right")
    for row in report["matrices"]:
        gates = "  ".join(f"{g} {d:.3f}" for g, d in row.get("gates", {}).items())
        table.add_row(row["name"], "x".join(map(str, row["shape"])), f"{row['nonzero']:,}", f"{row['density']:.4f}",
                      gates)
    table.add_row("total", "", f"{report['nonzero']:,}", f"{report['density']:.4f}", "", style="bold")
    return table
