"""What sparsernn's figures draw, read back from their axes as each one is saved: tests check the data
behind a plot (its lines, bars, images, labels and scales), not that a PNG file exists.

``drawn = record_figures(monkeypatch)`` wraps ``sparsernn.plots.save_figure``, through which every figure
is written (plot functions, the search report, the CLI); ``drawn[file name]`` is then a ``Figure``
with one ``Panel`` per axes, and the PNG is still written as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Line:
    label: str
    x: np.ndarray
    y: np.ndarray
    color: tuple[float, float, float, float]
    drawstyle: str
    linestyle: str = "-"


@dataclass
class Bars:
    """One ``bar`` call or one histogram: a rectangle per bar."""

    label: str
    x: np.ndarray  # left edges
    widths: np.ndarray
    heights: np.ndarray

    @property
    def centres(self) -> np.ndarray:
        return self.x + self.widths / 2


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    xscale: str
    yscale: str
    ylim: tuple[float, float]
    lines: list[Line]
    bars: list[Bars]
    images: list[np.ndarray]
    legend: list[str]
    xticklabels: list[str]
    texts: list[str]  # annotations

    def line(self, label: str) -> Line:
        (found,) = [line for line in self.lines if line.label == label]
        return found

    def labelled_lines(self) -> dict[str, Line]:
        """The lines with a label of their own (matplotlib names the others ``_child<n>``)."""
        return {line.label: line for line in self.lines if not line.label.startswith("_")}


@dataclass
class Figure:
    path: Path
    suptitle: str
    panels: list[Panel]

    @property
    def panel(self) -> Panel:
        """The one panel of a single-axes figure."""
        (only,) = self.panels
        return only


def _bars_label(container) -> str:
    """``bar`` labels its container, ``hist`` its first rectangle."""
    label = container.get_label()
    if label.startswith("_") and container.patches:
        label = container.patches[0].get_label()
    return label


def read_figure(fig, path) -> Figure:
    from matplotlib.colors import to_rgba

    panels = []
    for ax in fig.axes:
        legend = ax.get_legend()
        panels.append(Panel(
            title=ax.get_title(), xlabel=ax.get_xlabel(), ylabel=ax.get_ylabel(), xscale=ax.get_xscale(),
            yscale=ax.get_yscale(), ylim=tuple(ax.get_ylim()),
            lines=[Line(line.get_label(), np.asarray(line.get_xdata(), dtype=float),
                        np.asarray(line.get_ydata(), dtype=float), to_rgba(line.get_color()), line.get_drawstyle(),
                        line.get_linestyle())
                   for line in ax.lines],
            bars=[Bars(_bars_label(container), np.array([p.get_x() for p in container.patches]),
                       np.array([p.get_width() for p in container.patches]),
                       np.array([p.get_height() for p in container.patches]))
                  for container in ax.containers],
            images=[np.asarray(image.get_array()) for image in ax.images],
            legend=[text.get_text() for text in legend.get_texts()] if legend is not None else [],
            xticklabels=[label.get_text() for label in ax.get_xticklabels()],
            texts=[text.get_text() for text in ax.texts],
        ))
    if hasattr(fig, "get_suptitle"):  # matplotlib >= 3.8
        suptitle = fig.get_suptitle()
    else:
        suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    return Figure(Path(path), suptitle, panels)


def record_figures(monkeypatch) -> dict[str, Figure]:
    """Every figure saved from now on (until ``monkeypatch`` undoes it), by file name, in drawing order."""
    import sparsernn.plots

    drawn: dict[str, Figure] = {}
    save = sparsernn.plots.save_figure

    def recording(fig, plt, path):
        drawn[Path(path).name] = read_figure(fig, path)
        return save(fig, plt, path)

    monkeypatch.setattr(sparsernn.plots, "save_figure", recording)
    return drawn
