"""Every figure sparsernn draws, as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparsernn.dynamics import Spectrum


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_spectra(spectra: dict[str, Spectrum], path: str | Path, title: str = "Lyapunov spectrum") -> Path:
    """Exponents against their index, one line per model, overlaid."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, spectrum in spectra.items():
        e, f = spectrum.exponents.numpy(), spectrum.features  # -inf exponents are not drawn
        stats = "no finite exponent" if f["max"] is None else f"max {f['max']:.3f}, mean {f['mean']:.3f}"
        ax.plot(range(1, len(e) + 1), e, label=f"{label} ({stats})", lw=1.4)
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    unit = "nats" if next(iter(spectra.values())).log_base != 2 else "bits"
    ax.set_xlabel("exponent index")
    ax.set_ylabel(f"λ ({unit} per step)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, plt, path)


def plot_zero_pattern(model, path: str | Path, max_pixels: int = 600) -> Path:
    """The recurrent weight matrices' non-zero pattern (ISS paper Fig. 4): removed ISS components show
    as blank rows (gate rows) and columns. Large matrices are max-pooled down to ``max_pixels``."""
    import torch

    plt = pyplot()
    from sparsernn.models.discovery import discover

    names = [f"{layer.module}.{name}" for layer in discover(model)
             for name in layer.spec.weights(model.get_submodule(layer.module))]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 4), dpi=120)
    for ax, name in zip(list(axes) if len(names) > 1 else [axes], names):
        nonzero = (model.get_parameter(name).detach() != 0).float()[None, None]
        factor = max(1, -(-max(nonzero.shape[-2:]) // max_pixels))
        pooled = torch.nn.functional.max_pool2d(nonzero, factor, ceil_mode=True)[0, 0]
        ax.imshow(pooled.cpu().numpy(), cmap="Greys", interpolation="nearest", aspect="auto")
        ax.set_title(f"{name}\n{tuple(nonzero.shape[-2:])}, density {float(nonzero.mean()):.3f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("non-zero weights (black); blank strips are removed ISS components")
    fig.tight_layout()
    return save_figure(fig, plt, path)


def plot_group_norms(norms: dict[str, object], path: str | Path) -> Path:
    """Histogram of ISS component norms per layer (ISS paper Fig. 6)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=120)
    for label, values in norms.items():
        ax.hist(values.cpu().numpy(), bins=50, alpha=0.6, label=label)
    ax.set_xlabel("L2 norm of ISS component")
    ax.set_ylabel("components")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, plt, path)


def save_figure(fig, plt, path: str | Path) -> Path:
    from sparsernn.files import atomic_write_bytes

    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())  # one-line error if it cannot be written; never half a PNG
    return path


def plot_norm_curves(epochs: list[int], norms: list[list[list[float]]], path: str | Path) -> Path:
    """Every ISS component's norm over epochs, one panel per layer (ISS paper, Fig. 5): components that
    group Lasso removes fall to zero, the kept ones level off."""
    import numpy as np

    plt = pyplot()
    layers = len(norms[0])
    fig, axes = plt.subplots(1, layers, figsize=(4.2 * layers, 3.6), dpi=120, squeeze=False)
    for n, ax in enumerate(axes[0]):
        curves = np.array([epoch_norms[n] for epoch_norms in norms])  # (epochs, components)
        kept = int((curves[-1] > 0).sum())
        ax.plot(epochs, curves, color="tab:blue", lw=0.5, alpha=0.35)
        ax.set_title(f"layer {n + 1}: {kept} of {curves.shape[1]} components kept", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("component L2 norm")
    fig.tight_layout()
    return save_figure(fig, plt, path)


def plot_zero_lines(lines: dict[str, dict[str, int]], path: str | Path) -> Path:
    """All-zero rows and columns per recurrent weight matrix, as fractions: the intrinsic sparse
    structures that unstructured L1 reveals (ISS paper, Fig. 2)."""
    import numpy as np

    plt = pyplot()
    names = list(lines)
    rows = [lines[n]["zero_rows"] / lines[n]["rows"] for n in names]
    columns = [lines[n]["zero_columns"] / lines[n]["columns"] for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.8), dpi=120)
    ax.bar(x - 0.2, rows, 0.4, label="all-zero rows")
    ax.bar(x + 0.2, columns, 0.4, label="all-zero columns")
    ax.set_xticks(x, names, rotation=20, fontsize=7, ha="right")
    ax.set_ylabel("fraction of the matrix's rows / columns")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, plt, path)


def plot_structure(model, out_dir: str | Path, records: list[dict]) -> tuple[list[Path], dict[str, dict[str, int]]]:
    """The structure plots of a model trained with ISS or L1, in ``out_dir``: the zero pattern of each
    recurrent matrix, the component norms (over the epochs too, from the metrics ``records`` that hold
    them) and the all-zero rows and columns. Returns the files written and those rows and columns."""
    from sparsernn.sparsity.iss import group_sq_norms, zero_lines

    out_dir = Path(out_dir)
    written = [plot_zero_pattern(model, out_dir / "zero_pattern.png")]
    norms = {f"layer {n + 1}": sq.clamp_min(0).sqrt() for n, sq in enumerate(group_sq_norms(model))}
    written.append(plot_group_norms(norms, out_dir / "group_norms.png"))
    if records:
        written.append(plot_norm_curves([r["epoch"] for r in records], [r["iss_norms"] for r in records],
                                        out_dir / "group_norms_over_epochs.png"))
    lines = zero_lines(model)
    written.append(plot_zero_lines(lines, out_dir / "zero_rows_columns.png"))
    return written, lines
