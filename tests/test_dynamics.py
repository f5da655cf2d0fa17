"""Closed-form Jacobians against autograd through PyTorch's own modules, and known spectra."""

from __future__ import annotations

import math

import pytest
import torch

from sparsernn.config import ModelConfig
from sparsernn.dynamics import lyapunov_spectrum
from sparsernn.dynamics.jacobians import (initial_states, stack_jacobian, stack_params, stack_step, stack_times,
                                          state_sizes)
from sparsernn.models import RNNLanguageModel


def make_model(cell: str, sizes: list[int], masked: bool = False, seed: int = 0,
               init_range: float = 0.6) -> RNNLanguageModel:
    torch.manual_seed(seed)
    model = RNNLanguageModel(ModelConfig(cell=cell, hidden_sizes=sizes, embedding_size=7, init_range=init_range),
                             vocab_size=20).double()
    if masked:  # a masked-sparse model: weights zeroed at random positions
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "weight" in name:
                    p.mul_(torch.rand_like(p) < 0.4)
    return model.eval()


def reference_step(model: RNNLanguageModel, flat: torch.Tensor, x: torch.Tensor, mode: str, c_fixed):
    """New flat state from PyTorch's nn.LSTM/GRU/RNN modules (the ground truth for conventions)."""
    out, offset = [], 0
    for n, layer in enumerate(model.layers):
        H = layer.hidden_size
        h = flat[offset:offset + H]
        offset += H
        if model.cell == "lstm":
            if mode == "hc":
                c = flat[offset:offset + H]
                offset += H
            else:
                c = c_fixed[n]
            y, (h_new, c_new) = layer(x.view(1, 1, -1), (h.view(1, 1, H), c.view(1, 1, H)))
            out += [h_new.view(H)] + ([c_new.view(H)] if mode == "hc" else [])
        else:
            y, h_new = layer(x.view(1, 1, -1), h.view(1, 1, H))
            out.append(h_new.view(H))
        x = y.view(-1)
    return torch.cat(out)


CASES = [
    ("lstm", [9], False), ("lstm", [9, 6], False), ("lstm", [8, 5, 6], True),
    ("gru", [9, 6], False), ("gru", [7], True), ("rnn_tanh", [9, 6], False), ("rnn_relu", [8, 8], True),
]


@pytest.mark.parametrize(
    "cell,sizes,masked,mode",
    [(*case, mode) for case in CASES for mode in (("hc", "h") if case[0] == "lstm" else ("hc",))],
)
def test_closed_form_jacobian_equals_autograd(cell, sizes, masked, mode):
    model = make_model(cell, sizes, masked)
    layers = stack_params(model, torch.float64)
    torch.manual_seed(1)
    K = 3
    x = torch.randn(K, 7, dtype=torch.float64)
    hs = [torch.randn(K, H, dtype=torch.float64) * 0.8 for H in sizes]
    cs = [torch.randn(K, H, dtype=torch.float64) for H in sizes]
    states = [(h, c if cell == "lstm" else None) for h, c in zip(hs, cs)]
    _, jq = stack_jacobian(layers, states, x, mode)
    for s in range(K):
        blocks = []
        for h, c in zip(hs, cs):
            blocks.append(h[s])
            if cell == "lstm" and mode == "hc":
                blocks.append(c[s])
        flat = torch.cat(blocks)
        expected = torch.autograd.functional.jacobian(
            lambda v: reference_step(model, v, x[s], mode, [c[s] for c in cs]), flat)
        torch.testing.assert_close(jq[s], expected, rtol=0, atol=1e-6)
        if masked or len(sizes) > 1:
            assert expected.abs().sum() > 0


def test_a_stacks_true_jacobian_is_block_lower_triangular():
    """The premise of the per-layer bases, checked on PyTorch's own modules (autograd), not on the
    closed form: layer 1 does not depend on layer 2, layer 2 reads layer 1's new h."""
    model = make_model("lstm", [6, 5])
    torch.manual_seed(8)
    flat, x = torch.randn(22, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: reference_step(model, v, x, "hc", None), flat)
    assert jacobian[:12, 12:].abs().max() == 0
    assert jacobian[12:, :12].abs().max() > 0


def test_linear_rnn_exponents_are_the_log_singular_values():
    """h_t = W h_{t-1} + U x_t with W = Q diag(s) Q^T: the exponents are log(s), sorted."""
    torch.manual_seed(0)
    n = 12
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    s = torch.linspace(0.3, 1.6, n, dtype=torch.float64)
    model = RNNLanguageModel(ModelConfig(cell="rnn_tanh", hidden_sizes=[n], embedding_size=4), vocab_size=5).double()
    with torch.no_grad():
        model.layers[0].weight_hh_l0.copy_(q @ torch.diag(s) @ q.T)
        model.layers[0].bias_ih_l0.zero_()
        model.layers[0].bias_hh_l0.zero_()
    # zero input and state: h stays at 0 where tanh' = 1, so the step is exactly h -> W h
    inputs = torch.zeros(2, 1200, 4, dtype=torch.float64)
    spectrum = lyapunov_spectrum(model, inputs, warmup=200)  # warm-up aligns the basis
    torch.testing.assert_close(spectrum.exponents, s.log().sort(descending=True).values, atol=1e-3, rtol=0)


@pytest.mark.parametrize("basis", ["layers", "stack"])
def test_spectrum_does_not_depend_on_sample_order_and_k_columns_match_the_full_run(basis):
    model = make_model("lstm", [10, 8], masked=True)
    tokens = torch.randint(0, 20, (5, 60), generator=torch.Generator().manual_seed(3))
    full = lyapunov_spectrum(model, tokens, warmup=5, basis=basis)
    shuffled = lyapunov_spectrum(model, tokens[[3, 0, 4, 2, 1]], warmup=5, basis=basis)
    torch.testing.assert_close(full.exponents, shuffled.exponents, atol=1e-12, rtol=0)
    first = lyapunov_spectrum(model, tokens, k=6, warmup=5, basis=basis)
    torch.testing.assert_close(first.exponents, full.exponents[:6], atol=1e-10, rtol=0)
    # exactly, whatever the order of the columns' finite-T estimates: a k-column run's exponents are
    # those of the full run's first k columns (per layer for "layers")
    assert (first.exponents[:, None] - full.exponents[None, :]).abs().min(1).values.max() < 1e-10
    assert full.exponents.numel() == 36 and (full.exponents[:-1] >= full.exponents[1:]).all()


@pytest.mark.parametrize("basis", ["layers", "stack"])
def test_qr_every_s_steps_and_cholesky_qr_agree_with_every_step_householder(basis):
    model = make_model("lstm", [10, 8])
    tokens = torch.randint(0, 20, (4, 80), generator=torch.Generator().manual_seed(4))
    reference = lyapunov_spectrum(model, tokens, k=8, basis=basis)
    every3 = lyapunov_spectrum(model, tokens, k=8, qr_every=3, basis=basis)
    cholesky = lyapunov_spectrum(model, tokens, k=8, orthonormalization="cholesky", basis=basis)
    torch.testing.assert_close(every3.exponents, reference.exponents, atol=1e-8, rtol=0)
    torch.testing.assert_close(cholesky.exponents, reference.exponents, atol=1e-8, rtol=0)


def test_features_and_log_base():
    model = make_model("gru", [6])
    tokens = torch.randint(0, 20, (2, 30), generator=torch.Generator().manual_seed(5))
    natural = lyapunov_spectrum(model, tokens)
    base2 = lyapunov_spectrum(model, tokens, log_base=2.0)
    torch.testing.assert_close(base2.exponents, natural.exponents / math.log(2))
    features = natural.features
    assert features["max"] == natural.exponents[0] and features["num_positive"] == int((natural.exponents > 0).sum())
    assert features["mean"] == pytest.approx(float(natural.exponents.mean()))


def test_jacobian_of_a_compacted_model_equals_autograd():
    from sparsernn.sparsity.iss import compact, component_masks

    model = make_model("lstm", [9, 7])
    with torch.no_grad():
        for layer, unit in ((0, 2), (0, 5), (1, 3)):
            for name, mask in component_masks(model, layer, unit).items():
                model.get_parameter(name)[mask] = 0.0
    small = compact(model).eval()
    assert small.hidden_sizes == [7, 6]
    layers = stack_params(small, torch.float64)
    x = torch.randn(1, 7, dtype=torch.float64)
    flat = torch.randn(26, dtype=torch.float64) * 0.5
    states = [(flat[None, 0:7], flat[None, 7:14]), (flat[None, 14:20], flat[None, 20:26])]
    _, jq = stack_jacobian(layers, states, x, "hc")
    expected = torch.autograd.functional.jacobian(lambda v: reference_step(small, v, x[0], "hc", None), flat)
    torch.testing.assert_close(jq[0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell,sizes,masked,mode",
                         [(*case, mode) for case in CASES for mode in (("hc", "h") if case[0] == "lstm" else ("hc",))])
def test_fast_products_equal_the_materialised_jacobians(cell, sizes, masked, mode):
    """``times(Q)`` (gates folded, never the full block) equals ``state_matrix() @ Q`` per layer, and
    ``stack_times`` (diagonal and input blocks, in place) equals the whole stack's Jacobian times Q."""
    model = make_model(cell, sizes, masked)
    layers = stack_params(model, torch.float64)
    torch.manual_seed(2)
    K = 3
    states = [(torch.randn(K, H, dtype=torch.float64) * 0.8, torch.randn(K, H, dtype=torch.float64) if cell == "lstm"
               else None) for H in sizes]
    x = torch.randn(K, 7, dtype=torch.float64)
    _, jacobians = stack_step(layers, states, x, mode)
    for jacobian, size in zip(jacobians, state_sizes(layers, mode)):
        basis = torch.randn(K, size, 4, dtype=torch.float64)
        torch.testing.assert_close(jacobian.times(basis), jacobian.state_matrix() @ basis, rtol=0, atol=1e-12)
    _, whole = stack_jacobian(layers, states, x, mode)
    basis = torch.randn(K, whole.shape[1], 5, dtype=torch.float64)
    torch.testing.assert_close(stack_times(jacobians, basis), whole @ basis, rtol=0, atol=1e-12)


def qr_method_on_materialised_blocks(model, inputs: torch.Tensor, mode: str, blocks: list[torch.Tensor]) -> torch.Tensor:
    """The textbook algorithm on the materialised stack Jacobian (checked against autograd above),
    one basis per group of state coordinates in ``blocks`` (``Q0 = I`` on each, in the given
    order), full QR every step; all exponents, sorted."""
    layers = stack_params(model, torch.float64)
    K, T = inputs.shape[:2]
    states = initial_states(layers, K, inputs)
    bases = [torch.eye(len(b), dtype=torch.float64).expand(K, -1, -1) for b in blocks]
    total = []
    for t in range(T):
        states, matrix = stack_jacobian(layers, states, inputs[:, t], mode)
        growth = []
        for i, b in enumerate(blocks):
            bases[i], r = torch.linalg.qr(matrix[:, b][:, :, b] @ bases[i])
            growth.append(r.diagonal(dim1=1, dim2=2).abs().log())
        total.append(torch.cat(growth, 1))
    return torch.stack(total).mean(0).mean(0).sort(descending=True).values


def layer_blocks(model, mode: str, top_first: bool = False) -> list[torch.Tensor]:
    sizes = state_sizes(stack_params(model), mode)
    blocks = [torch.arange(sum(sizes[:i]), sum(sizes[:i + 1])) for i in range(len(sizes))]
    return blocks[::-1] if top_first else blocks


# (a masked LSTM this small has a singular W_o, so an exactly singular Jacobian whose -inf exponents
# come out as rounding noise near -34: not a case two implementations can agree on)
@pytest.mark.parametrize("cell,sizes,masked,mode", [("lstm", [7, 5, 6], False, "hc"), ("lstm", [7, 5], True, "h"),
                                                    ("gru", [6, 8], True, "hc"), ("rnn_tanh", [5, 4], False, "hc")])
def test_engine_equals_the_textbook_qr_method_for_both_bases(cell, sizes, masked, mode):
    model = make_model(cell, sizes, masked)
    inputs = torch.randn(3, 40, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    stack = lyapunov_spectrum(model, inputs, state=mode, basis="stack")
    layers = lyapunov_spectrum(model, inputs, state=mode, basis="layers")
    whole = torch.cat(layer_blocks(model, mode))
    torch.testing.assert_close(stack.exponents, qr_method_on_materialised_blocks(model, inputs, mode, [whole]),
                               rtol=0, atol=1e-9)
    torch.testing.assert_close(layers.exponents, qr_method_on_materialised_blocks(model, inputs, mode,
                                                                                  layer_blocks(model, mode)),
                               rtol=0, atol=1e-9)
    # the two bases are different finite-T estimates of one spectrum: equal sums (log|det| of the
    # product of Jacobians), different exponents
    torch.testing.assert_close(stack.exponents.sum(), layers.exponents.sum(), rtol=0, atol=1e-9)
    assert (stack.exponents - layers.exponents).abs().max() > 1e-4


def test_per_layer_bases_are_the_stack_qr_run_with_the_top_layer_first():
    """The stack's Jacobian is block lower triangular, so with Q0's columns ordered top layer first
    the whole-stack QR run stays block diagonal: exactly the per-layer runs. (In floating point that
    ordering is only stable while no lower layer grows faster than the top one decays, as here.)"""
    model = make_model("gru", [6, 8], init_range=0.3)
    inputs = torch.randn(3, 40, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    top_first = torch.cat(layer_blocks(model, "hc", top_first=True))
    expected = qr_method_on_materialised_blocks(model, inputs, "hc", [top_first])
    torch.testing.assert_close(lyapunov_spectrum(model, inputs, basis="layers").exponents, expected,
                               rtol=0, atol=1e-9)


def test_both_bases_converge_to_one_spectrum():
    model = make_model("lstm", [6, 5], init_range=0.3)
    inputs = torch.randn(2, 3000, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    short = [lyapunov_spectrum(model, inputs[:, :60], basis=b).exponents for b in ("stack", "layers")]
    long = [lyapunov_spectrum(model, inputs, basis=b).exponents for b in ("stack", "layers")]
    gap_short, gap_long = (short[0] - short[1]).abs().max(), (long[0] - long[1]).abs().max()
    assert gap_long < 0.02 and gap_long < gap_short / 5
