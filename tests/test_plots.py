"""Every figure of sparsernn.plots draws the numbers it is given: lines, bars and images read back from
the axes (tests/figures.py), labels and scales included; and a figure is written whole and closed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsernn.config import ModelConfig
from sparsernn.dynamics import Spectrum
from sparsernn.models import RNNLanguageModel
from sparsernn.plots import (
    plot_group_norms,
    plot_norm_curves,
    plot_spectra,
    plot_zero_lines,
    plot_zero_pattern,
    pyplot,
    save_figure,
)

from figures import record_figures


def spectrum(values, log_base=math.e) -> Spectrum:
    exponents = torch.tensor(values, dtype=torch.float64)
    return Spectrum(exponents=exponents, per_sample=exponents[None], log_base=log_base)


def test_spectra_are_one_line_per_model_of_exponent_against_index(tmp_path, monkeypatch):
    drawn = record_figures(monkeypatch)
    spectra = {"dense": spectrum([0.5, 0.1, -0.2, -math.inf]), "dead": spectrum([-math.inf, -math.inf])}
    path = plot_spectra(spectra, tmp_path / "ls.png", title="two models")
    assert path == tmp_path / "ls.png" and path.is_file()
    panel = drawn["ls.png"].panel
    assert panel.title == "two models" and panel.xlabel == "exponent index" and panel.ylabel == "λ (nats per step)"
    lines = panel.labelled_lines()
    # the statistics in a label are over the finite exponents: mean (0.5 + 0.1 - 0.2) / 3
    assert list(lines) == ["dense (max 0.500, mean 0.133)", "dead (no finite exponent)"] == panel.legend
    dense = lines["dense (max 0.500, mean 0.133)"]
    assert dense.x.tolist() == [1, 2, 3, 4] and dense.y.tolist() == [0.5, 0.1, -0.2, -math.inf]
    assert lines["dead (no finite exponent)"].x.tolist() == [1, 2]
    (zero,) = [line for line in panel.lines if line.label not in lines]  # the dashed line at 0
    assert zero.y.tolist() == [0.0, 0.0]

    plot_spectra({"bits": spectrum([0.25], log_base=2.0)}, tmp_path / "bits.png")
    assert drawn["bits.png"].panel.ylabel == "λ (bits per step)"
    assert drawn["bits.png"].panel.title == "Lyapunov spectrum"


def small_lm(hidden=(4, 3)) -> RNNLanguageModel:
    torch.manual_seed(0)
    return RNNLanguageModel(ModelConfig(hidden_sizes=list(hidden)), vocab_size=10)


def test_zero_pattern_is_each_recurrent_matrix_nonzeros(tmp_path, monkeypatch):
    drawn = record_figures(monkeypatch)
    model = small_lm()
    with torch.no_grad():
        model.layers[0].weight_hh_l0[4:8] = 0.0  # the forget-gate rows of layer 0
        model.layers[1].weight_ih_l0[:, 2] = 0.0  # layer 1's input from unit 2
    plot_zero_pattern(model, tmp_path / "zero.png")
    figure = drawn["zero.png"]
    names = ["layers.0.weight_ih_l0", "layers.0.weight_hh_l0", "layers.1.weight_ih_l0", "layers.1.weight_hh_l0"]
    assert len(figure.panels) == 4 and "blank strips are removed ISS components" in figure.suptitle
    for panel, name in zip(figure.panels, names):
        nonzero = (model.get_parameter(name).detach() != 0).float()
        (image,) = panel.images
        np.testing.assert_array_equal(image, nonzero.numpy())  # small: one pixel per weight
        assert panel.title == f"{name}\n{tuple(nonzero.shape)}, density {float(nonzero.mean()):.3f}"
    assert figure.panels[1].title.endswith("density 0.750")  # 4 of 16 rows zero
    assert figure.panels[2].images[0][:, 2].sum() == 0


def test_a_large_zero_pattern_is_max_pooled(tmp_path, monkeypatch):
    drawn = record_figures(monkeypatch)
    model = small_lm(hidden=(8,))  # weight_hh: 32 x 8
    with torch.no_grad():
        model.layers[0].weight_hh_l0.zero_()
        model.layers[0].weight_hh_l0[5, 1] = 1.0  # one non-zero, in the pooled pixel (5 // 4, 1 // 4)
    plot_zero_pattern(model, tmp_path / "zero.png", max_pixels=8)
    image = drawn["zero.png"].panels[1].images[0]
    expected = np.zeros((8, 2))
    expected[1, 0] = 1.0
    np.testing.assert_array_equal(image, expected)  # 32 x 8 pooled by 4 (ceil(32 / 8))


def test_group_norms_are_a_histogram_per_layer(tmp_path, monkeypatch):
    drawn = record_figures(monkeypatch)
    norms = {"layer 1": torch.tensor([0.0, 0.0, 0.5, 1.0]), "layer 2": torch.tensor([0.2, 0.2, 0.2])}
    plot_group_norms(norms, tmp_path / "norms.png")
    panel = drawn["norms.png"].panel
    assert panel.legend == ["layer 1", "layer 2"] and panel.xlabel == "L2 norm of ISS component"
    first, second = panel.bars
    assert first.label == "layer 1" and len(first.heights) == 50 and first.heights.sum() == 4
    assert first.heights[0] == 2 and first.heights[-1] == 1  # the two removed ones, and the largest
    assert first.x[0] == pytest.approx(0.0) and first.x[-1] + first.widths[-1] == pytest.approx(1.0)
    assert second.heights.sum() == 3 and second.heights.max() == 3  # all in one bin


def test_norm_curves_are_every_components_norm_over_epochs(tmp_path, monkeypatch):
    drawn = record_figures(monkeypatch)
    epochs = [1, 2, 3]
    norms = [[[1.0, 0.5, 0.9], [0.7, 0.6]],  # epoch 1: layer 1's three components, layer 2's two
             [[0.8, 0.1, 0.9], [0.6, 0.3]],
             [[0.8, 0.0, 0.9], [0.0, 0.0]]]
    plot_norm_curves(epochs, norms, tmp_path / "curves.png")
    first, second = drawn["curves.png"].panels
    assert first.title == "layer 1: 2 of 3 components kept" and second.title == "layer 2: 0 of 2 components kept"
    assert [line.y.tolist() for line in first.lines] == [[1.0, 0.8, 0.8], [0.5, 0.1, 0.0], [0.9, 0.9, 0.9]]
    assert [line.y.tolist() for line in second.lines] == [[0.7, 0.6, 0.0], [0.6, 0.3, 0.0]]
    assert all(line.x.tolist() == epochs for line in first.lines + second.lines)
    assert (first.xlabel, first.ylabel) == ("epoch", "component L2 norm")


def test_zero_lines_are_fractions_of_rows_and_columns(tmp_path, monkeypatch):
    drawn = record_figures(monkeypatch)
    lines = {"layers.0.weight_hh_l0": {"zero_rows": 4, "rows": 16, "zero_columns": 1, "columns": 4},
             "layers.1.weight_hh_l0": {"zero_rows": 0, "rows": 12, "zero_columns": 3, "columns": 3}}
    plot_zero_lines(lines, tmp_path / "lines.png")
    panel = drawn["lines.png"].panel
    rows, columns = panel.bars
    assert (rows.label, columns.label) == ("all-zero rows", "all-zero columns")
    assert rows.heights.tolist() == [0.25, 0.0] and columns.heights.tolist() == [0.25, 1.0]
    assert rows.centres == pytest.approx([-0.2, 0.8]) and columns.centres == pytest.approx([0.2, 1.2])
    assert panel.xticklabels == list(lines) and panel.ylim == (0.0, 1.0)


def test_a_figure_is_written_as_a_whole_png_and_closed(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    path = save_figure(fig, plt, tmp_path / "new" / "dir" / "f.png")  # folders made as needed
    assert path == tmp_path / "new" / "dir" / "f.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)  # closed: a long search does not pile up figures
    assert [p.name for p in path.parent.iterdir()] == ["f.png"]  # no temporary file left
