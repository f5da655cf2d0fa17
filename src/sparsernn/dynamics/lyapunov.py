"""Lyapunov spectrum of a recurrent model driven by real input sequences.

After Vogt et al. (2022), as used by the hyperpruning paper: from zero state and an orthonormal basis
``Q0 = I`` (or its first k columns), each step advances the state, forms ``J_t Q_{t-1}`` in closed
form (``jacobians.py``), re-orthonormalises by QR and accumulates ``log|diag R_t|``; the exponents are
the mean over the counted steps and the K samples. All K samples run batched.

Two bases, two finite-T estimates of one spectrum:

- ``basis="stack"``: one basis for the whole state ``[layer 1, layer 2, ...]`` — the textbook
  algorithm and what the public hyperpruning/Lyapunov code computes. Costs an ``n x k`` QR per step.
- ``basis="layers"`` (default): one basis per layer, pushed through that layer's diagonal block only.
  A stack's Jacobian is block lower triangular (layer l reads layer l-1's new h; nothing reads
  upward), so the top layer's coordinates span an invariant subspace, then the top two layers', and
  so on. With ``Q0 = I`` taken top layer first, the stack's QR run stays block diagonal and
  ``diag R_t`` is exactly the concatenation of the layers' own runs: the stack's spectrum is the
  union of its layers' spectra (the block form of the fact the QR method rests on, that a triangular
  cocycle's exponents are those of its diagonal). Running the layers separately is also the
  numerically stable way to compute that ordering, which a whole-stack QR loses to rounding as soon
  as a lower layer grows faster than the top one decays. Costs an ``n_l x k`` QR per layer and no
  off-diagonal products.

With ``k`` below the state size, the run keeps the first ``k`` columns of Q0 (of each layer's Q0 for
"layers", returning the top ``k`` of their union): in the limit these carry the ``k`` largest
exponents; at finite T a column's estimate can rank below a later column's, so a k-column run
equals the full run's first-k *columns*, which are usually but not always its top k.

The two agree as T grows (exactly in the limit). At T=100 on ptb-small they differ by about 0.01 in
the leading 64 exponents and up to 0.1 in the tail, less than either one's own distance to the
limit (docs/benchmarks.md): compare spectra computed with the same basis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparsernn.dynamics.jacobians import initial_states, stack_params, stack_step, stack_times, state_sizes
from sparsernn.models.cells import CellParams
from sparsernn.models.discovery import chain_check, declares_stack, trace_stack


@dataclass(frozen=True)
class Spectrum:
    """Exponents sorted descending (per step, natural log unless ``log_base`` says otherwise)."""

    exponents: torch.Tensor
    per_sample: torch.Tensor = field(repr=False)
    state: str = "hc"
    basis: str = "layers"
    log_base: float = math.e
    steps: int = 0
    samples: int = 0
    orthonormalization: str = "householder"
    fallbacks: int = 0  # steps where CholeskyQR2 broke down and Householder QR was used instead

    @property
    def features(self) -> dict[str, float | int | None]:
        """Max, mean and variance over the finite exponents; ``num_minus_inf`` counts the exponents that
        are -inf (a direction that collapses to exactly zero, e.g. a dead ReLU unit). With no finite
        exponent the three statistics are None."""
        e = self.exponents
        finite = e[torch.isfinite(e)]
        stats = {"max": None, "mean": None, "variance": None}
        if finite.numel():
            stats = {"max": float(finite.max()), "mean": float(finite.mean()),
                     "variance": float(finite.var(unbiased=False))}
        return {**stats, "num_positive": int((e > 0).sum()), "num_minus_inf": int(torch.isneginf(e).sum()),
                "num_nan": int(torch.isnan(e).sum())}

    def to_dict(self) -> dict:
        """Strict JSON: non-finite exponents are null (counted in the features)."""
        return {
            "exponents": [x if math.isfinite(x) else None for x in self.exponents.tolist()],
            "features": self.features,
            "orthonormalization": self.orthonormalization,
            "fallbacks": self.fallbacks,
            "state": self.state,
            "basis": self.basis,
            "log_base": "e" if self.log_base == math.e else self.log_base,
            "steps": self.steps,
            "samples": self.samples,
        }


def _orthonormalize(matrix: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """QR of a batch ``(K, n, k)``; returns ``(Q, |diag R|, whether CholeskyQR2 fell back to Householder)``."""
    if method == "cholesky":
        try:
            return (*_cholesky_qr2(matrix), False)
        except torch.linalg.LinAlgError:  # A^T A not numerically positive definite: ill-conditioned J Q
            return (*_orthonormalize(matrix, "householder")[:2], True)
    if method == "householder":
        # linalg.qr, unrolled: geqrf keeps R in the upper triangle of its result (no triu copy of R)
        # and Q is formed in place over the reflectors (LAPACK's orgqr is in place; no copy)
        reflectors, tau = torch.geqrf(matrix)
        growth = reflectors.diagonal(dim1=-2, dim2=-1).abs()
        return torch.linalg.householder_product(reflectors, tau, out=reflectors), growth, False
    raise ValueError(f"orthonormalization must be 'householder' or 'cholesky', got {method!r}")


def _cholesky_qr2(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CholeskyQR2: two rounds of Q = A R^-1 with R = chol(A^T A); GEMM-bound, accurate when A is
    well conditioned (one step of a Jacobian applied to an orthonormal basis often is, not always)."""
    q, diag = matrix, None
    for _ in range(2):
        gram = q.transpose(-2, -1) @ q
        r = torch.linalg.cholesky(gram, upper=True)
        q = torch.linalg.solve_triangular(r, q, upper=True, left=False)
        d = r.diagonal(dim1=-2, dim2=-1).abs()
        diag = d if diag is None else diag * d
    return q, diag


@torch.no_grad()
def lyapunov_spectrum(
    model: nn.Module,
    sequences: Any,
    k: int | None = None,
    state: str = "hc",
    warmup: int = 0,
    qr_every: int = 1,
    dtype: torch.dtype = torch.float64,
    log_base: float = math.e,
    orthonormalization: str = "householder",
    basis: str = "layers",
) -> Spectrum:
    """The first ``k`` Lyapunov exponents (default: all) of ``model``'s recurrent stack.

    For the toolkit's models, ``sequences (K, T)`` are token ids (embedded by ``model.embedding``) or
    ``(K, T, I)`` inputs. Any other module is a user's: ``sequences`` is what ``model(sequences)``
    takes, its stack is discovered (``models.discovery``) and driven by what reaches its first layer
    (a 2-layer ``nn.LSTM`` is two layers, as the same weights split into two 1-layer modules).
    ``basis``: ``"layers"`` (one basis per layer) or ``"stack"`` (one for the whole state); see the
    module docstring. ``warmup`` steps advance the state and basis but are not counted; QR every
    ``qr_every`` steps (log|diag R| of a product of ``s`` Jacobians is still the sum of their growth
    rates; exact for the leading exponents, not for a tail that contracts below float precision
    within ``s`` steps).
    """
    _check_options(state, basis, qr_every, orthonormalization)
    layers, inputs = _driven_stack(model, sequences, dtype)
    return stack_spectrum(layers, inputs, k, state, warmup, qr_every, log_base, orthonormalization, basis)


def _check_options(state: str, basis: str, qr_every: int, orthonormalization: str) -> None:
    if state not in ("hc", "h"):
        raise ValueError(f"state must be 'hc' or 'h', got {state!r}")
    if basis not in ("layers", "stack"):
        raise ValueError(f"basis must be 'layers' or 'stack', got {basis!r}")
    if qr_every < 1:
        raise ValueError("qr_every must be >= 1")
    if orthonormalization not in ("householder", "cholesky"):
        raise ValueError(f"orthonormalization must be 'householder' or 'cholesky', got {orthonormalization!r}")


def _driven_stack(model: nn.Module, sequences: Any, dtype: torch.dtype) -> tuple[list[CellParams], torch.Tensor]:
    """The stack's weights and its ``(K, T, I)`` input: the toolkit's model states its stack and embeds
    token ids itself; a user's module is discovered, its first layer's input captured by a hook."""
    if declares_stack(model):
        layers = stack_params(model, dtype)
        device = layers[0].w_hh.device
        if sequences.dtype in (torch.int64, torch.int32):
            return layers, model.embedding(sequences.to(device)).to(dtype)
        return layers, sequences.to(device=device, dtype=dtype)
    stack, first_input = trace_stack(model, sequences)
    chain_check(stack)
    layers = stack_params(model, dtype, stack)
    return layers, first_input.to(device=layers[0].w_hh.device, dtype=dtype)


def stack_spectrum(layers: list[CellParams], inputs: torch.Tensor, k: int | None = None, state: str = "hc",
                   warmup: int = 0, qr_every: int = 1, log_base: float = math.e,
                   orthonormalization: str = "householder", basis: str = "layers") -> Spectrum:
    """The QR loop over a stack's weights driven by ``inputs (K, T, I)`` from zero state (options as
    ``lyapunov_spectrum``); pure: weights and inputs in, a Spectrum out."""
    dtype, device = inputs.dtype, inputs.device
    K, T = inputs.shape[:2]
    if warmup >= T:
        raise ValueError(f"warmup ({warmup}) must be shorter than the sequences ({T} steps)")
    sizes = state_sizes(layers, state)
    n = sum(sizes)
    k = n if k is None else k
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    states = initial_states(layers, K, inputs)
    shapes = [(size, min(k, size)) for size in sizes] if basis == "layers" else [(n, k)]
    bases = [torch.eye(rows, cols, dtype=dtype, device=device).expand(K, rows, cols).contiguous()
             for rows, cols in shapes]
    total = torch.zeros(K, sum(cols for _, cols in shapes), dtype=dtype, device=device)
    counted = pending = fallbacks = 0  # pending: steps since the last QR
    for t in range(T):
        states, jacobians = stack_step(layers, states, inputs[:, t], state)
        if basis == "layers":
            bases = [jacobian.times(q) for jacobian, q in zip(jacobians, bases)]
        else:
            bases = [stack_times(jacobians, bases[0])]
        pending += 1
        if pending == qr_every or t == T - 1 or t == warmup - 1:
            orthonormal = [_orthonormalize(q, orthonormalization) for q in bases]
            bases = [q for q, _, _ in orthonormal]
            fallbacks += any(fell_back for _, _, fell_back in orthonormal)
            if t >= warmup:
                total += torch.cat([growth for _, growth, _ in orthonormal], 1).log()
                counted += pending
            pending = 0
    per_column = total / counted / math.log(log_base)
    exponents, order = per_column.mean(0).sort(descending=True)
    per_sample = per_column[:, order[:k]]
    return Spectrum(exponents[:k].cpu(), per_sample.cpu(), state, basis, log_base, counted, K, orthonormalization,
                    fallbacks)


def validation_sequences(tokens: torch.Tensor, samples: int, steps: int) -> torch.Tensor:
    """``samples`` windows of ``steps`` tokens, evenly spaced over a token stream: ``(samples, steps)``."""
    if tokens.numel() < samples * steps:
        raise ValueError(f"{tokens.numel()} tokens cannot give {samples} sequences of {steps}")
    stride = tokens.numel() // samples
    return torch.stack([tokens[i * stride:i * stride + steps] for i in range(samples)])


__all__ = ["Spectrum", "lyapunov_spectrum", "stack_spectrum", "validation_sequences"]
