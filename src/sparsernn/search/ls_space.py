"""Distances between Lyapunov spectra: where a candidate's dynamics stand relative to the dense
reference's. Pure functions: spectra in, numbers out.

``pca2`` (the hyperpruning paper): the spectra of the reference and of every candidate over epochs
0..E are projected to two dimensions by one PCA (the "LS space"), and a candidate's distance is the
L2 distance between its point and the reference's at epoch E. ``raw`` (what the public code
computes): the L2 distance between the raw spectra at epoch E. Either uses the first ``k`` exponents
of each spectrum (sorted descending) or all of them (also when a state has no more than ``k``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Spectra = Mapping[int, list[float | None]]  # epoch -> exponents (None: -inf, as spectra are stored)

DISTANCES = ("pca2", "raw")


def _matrix(rows: list[list[float | None]], k: int | None) -> np.ndarray:
    """Spectra as rows of a float matrix, cut to ``k`` (all of them when they are no longer); -inf
    (stored as None) becomes the lowest finite exponent seen, so a collapsed direction counts as
    maximally contracting, not as missing."""
    width = min(len(r) for r in rows) if k is None else min(k, max(len(r) for r in rows))
    if any(len(r) < width for r in rows):
        raise ValueError(f"spectra of different lengths ({min(len(r) for r in rows)} and {width}): not one model's")
    matrix = np.array([[np.nan if x is None else x for x in r[:width]] for r in rows], dtype=np.float64)
    finite = matrix[np.isfinite(matrix)]
    floor = finite.min() if finite.size else -1.0
    return np.where(np.isfinite(matrix), matrix, floor)


def ls_distances(reference: Spectra, candidates: Mapping[str, Spectra], epoch: int, method: str = "pca2",
                 k: int | None = None) -> tuple[dict[str, float], dict[str, dict[int, tuple[float, float]]]]:
    """Each candidate's distance to the reference at ``epoch``, and (``pca2``) every 2-D point the
    PCA placed, ``{"reference" | candidate: {epoch: (x, y)}}``, for plots.

    The PCA is fitted on the reference's and the candidates' spectra of every epoch up to ``epoch``.
    """
    if method not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {method!r}")
    who = {"reference": reference, **candidates}
    keys = [(name, e) for name, spectra in who.items() for e in sorted(spectra) if e <= epoch]
    for name, spectra in who.items():
        if epoch not in spectra:
            raise ValueError(f"{name} has no spectrum at epoch {epoch}")
    matrix = _matrix([who[name][e] for name, e in keys], k)
    row = {key: i for i, key in enumerate(keys)}
    if method == "raw":
        ref = matrix[row["reference", epoch]]
        return {name: float(np.linalg.norm(matrix[row[name, epoch]] - ref)) for name in candidates}, {}
    from sklearn.decomposition import PCA

    points = PCA(n_components=2, svd_solver="full").fit_transform(matrix)
    ref = points[row["reference", epoch]]
    distances = {name: float(np.linalg.norm(points[row[name, epoch]] - ref)) for name in candidates}
    placed: dict[str, dict[int, tuple[float, float]]] = {}
    for (name, e), i in row.items():
        placed.setdefault(name, {})[e] = (float(points[i, 0]), float(points[i, 1]))
    return distances, placed


def nearer_half(distances: Mapping[str, float]) -> tuple[list[str], list[str]]:
    """``(kept, eliminated)``: the ceil(n/2) candidates nearest the reference, and the rest (ties by name)."""
    ranked = sorted(distances, key=lambda name: (distances[name], name))
    keep = (len(ranked) + 1) // 2
    return ranked[:keep], ranked[keep:]
