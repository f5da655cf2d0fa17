"""Every figure sparsernn draws, as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparsernn.dynamics import Spectrum


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_spectra(spectra: dict[str, Spectrum], path: str | Path, title: str = "Lyapunov spectrum") -> Path:
    """Exponents against their index, one line per model, overlaid."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, spectrum in spectra.items():
        e = spectrum.exponents.numpy()
        ax.plot(range(1, len(e) + 1), e, label=f"{label} (max {e[0]:.3f}, mean {e.mean():.3f})", lw=1.4)
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    unit = "nats" if next(iter(spectra.values())).log_base != 2 else "bits"
    ax.set_xlabel("exponent index")
    ax.set_ylabel(f"λ ({unit} per step)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
