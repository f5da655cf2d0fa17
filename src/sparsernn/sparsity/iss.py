"""Intrinsic Sparse Structures (Wen et al., ICLR 2018): group maps, group norms, compaction.

The training side (group Lasso, its proximal step, targets) is ``sparsity.lasso``.

The k-th ISS component of recurrent layer n is every weight tied to its hidden unit k: the gate rows
``g*H + k`` of ``W_ih`` and ``W_hh`` (and of the biases, as an option), column k of ``W_hh``, and
column k of every receiver of the layer's output (the next layer's ``W_ih``, the decoder). For a
bidirectional layer component k is unit k of *both* directions (rows in both directions' matrices,
columns k and H + k of every receiver), so the compacted layer is still one bidirectional module.

Everything is derived from the model's recurrent stack (``discover(model)``): a "slice" says that dimension ``dim`` of a
parameter is indexed by the units of layer n in ``blocks`` blocks of H (row ``b*H + k``). Group
norms, the group-Lasso gradient and compaction all read the same slices.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from sparsernn.config import RunConfig, SparsityConfig, validate
from sparsernn.errors import Failure
from sparsernn.models.cells import UnitSlice
from sparsernn.models.discovery import discover
from sparsernn.models.lm import count_parameters
from sparsernn.models.stack import multiply_adds

EPSILON = 1e-8  # ||w|| = sqrt(eps + sum w^2): differentiable at an all-zero group


def unit_slices(model: nn.Module) -> list[UnitSlice]:
    """Every parameter dimension indexed by some layer's hidden units, from the recurrent stack: each
    layer's own (its cell type says which), and the input columns of every receiver of its output.

    With tied weights (``model.tie_weights``) the decoder's columns *are* the embedding's, so unit k of
    the last layer is also embedding dimension k: its component takes the embedding column and the
    first layer's input columns k as well (the ISS paper's RHN groups), and compaction narrows the
    embedding with the last layer.
    """
    stack = discover(model)
    index = {layer.module: n for n, layer in enumerate(stack)}
    tied = bool(getattr(model.config, "tie_weights", False))
    slices: list[UnitSlice] = []
    for n, layer in enumerate(stack):
        slices += layer.spec.unit_slices(layer.module, model.get_submodule(layer.module), n, layer.hidden_size)
        directions = 2 if layer.bidirectional else 1
        for receiver in layer.receivers:
            if receiver == "embedding" and tied:
                continue  # the tie: its columns are the decoder's, taken with the decoder just below
            if receiver == "decoder" and tied:
                first = stack[0]
                slices.append(UnitSlice("embedding.weight", 1, n, directions, layer.hidden_size))
                slices += [UnitSlice(f"{first.module}.{name}", 1, n, directions, layer.hidden_size)
                           for name in first.spec.input_weights(model.get_submodule(first.module))]
                continue
            target = model.get_submodule(receiver)
            # a recurrent receiver reads the output through its input weights; any other (the decoder)
            # is a linear layer whose weight's columns are the output
            names = stack[index[receiver]].spec.input_weights(target) if receiver in index else ["weight"]
            slices += [UnitSlice(f"{receiver}.{name}", 1, n, directions, layer.hidden_size) for name in names]
    return _mark_crossings(slices)


def _mark_crossings(slices: list[UnitSlice]) -> list[UnitSlice]:
    """A parameter whose rows and columns are both indexed by the units of one layer (``W_hh``; a tied
    one-layer model's ``W_ih``) holds entries that belong to a unit once: mark its row slice."""
    columns = {(s.param, s.layer) for s in slices if s.dim == 1 and s.blocks == 1}
    return [replace(s, crosses=True) if s.dim == 0 and (s.param, s.layer) in columns else s for s in slices]


def _unit_view(tensor: torch.Tensor, s: UnitSlice) -> torch.Tensor:
    """``tensor`` viewed as ``(before, blocks, H, after)`` along the slice's dimension."""
    before = tensor.shape[: s.dim].numel()
    after = tensor.shape[s.dim + 1:].numel()
    return tensor.view(before, s.blocks, s.hidden, after)


def group_sq_norms(model: nn.Module, slices: list[UnitSlice] | None = None, biases: bool = False) -> list[torch.Tensor]:
    """Per layer, the squared L2 norm of each ISS component ``(H_n,)``; each weight counted once.

    ``W_hh`` belongs to its layer's components twice over (row k and column k); the four (three, one)
    entries where they cross are subtracted once.
    """
    slices = slices if slices is not None else unit_slices(model)
    stack = discover(model)
    norms = [torch.zeros(layer.hidden_size, device=model.decoder.weight.device) for layer in stack]
    for s in slices:
        if s.is_bias and not biases:
            continue
        w = model.get_parameter(s.param).detach()
        sq = _unit_view(w.pow(2), s).sum(dim=(0, 1, 3))
        norms[s.layer] = norms[s.layer] + sq
        if s.crosses:
            crossing = w.view(s.blocks, s.hidden, s.hidden).diagonal(dim1=1, dim2=2)
            norms[s.layer] = norms[s.layer] - crossing.pow(2).sum(0)
    return norms


@torch.no_grad()
def shrink_components(model: nn.Module, slices: list[UnitSlice], factors: list[torch.Tensor]) -> None:
    """Multiply every weight of component k of layer n by ``factors[n][k]``, in place.

    An entry in two components (``W_hh[row of k, column j]``) is scaled by both factors, an entry in
    one component twice (where row k meets column k) by its factor once.
    """
    by_param: dict[str, list[UnitSlice]] = {}
    for s in slices:
        by_param.setdefault(s.param, []).append(s)
    for name, group in by_param.items():
        p = model.get_parameter(name)
        scale = torch.ones_like(p)
        for s in group:
            _unit_view(scale, s).mul_(factors[s.layer].to(p.dtype).view(1, 1, s.hidden, 1))
        for s in group:
            if s.crosses:
                meet = scale.view(s.blocks, s.hidden, s.hidden).diagonal(dim1=1, dim2=2)
                meet.copy_(factors[s.layer].to(p.dtype).expand_as(meet))
        p.mul_(scale)


def component_masks(model: nn.Module, layer: int, unit: int, biases: bool = False) -> dict[str, torch.Tensor]:
    """Explicit bool masks of the weights in one ISS component (for tests and plots)."""
    masks: dict[str, torch.Tensor] = {}
    for s in unit_slices(model):
        if s.layer != layer or (s.is_bias and not biases):
            continue
        param = model.get_parameter(s.param)
        mask = masks.setdefault(s.param, torch.zeros_like(param, dtype=torch.bool))
        view = _unit_view(mask, s)
        view[:, :, unit, :] = True
    return masks


def removable_units(model: nn.Module, biases: bool = False) -> list[torch.Tensor]:
    """Per layer, a bool tensor: True where the whole ISS component is exactly zero."""
    stack = discover(model)
    zero = [torch.ones(layer.hidden_size, dtype=torch.bool, device=model.decoder.weight.device) for layer in stack]
    for s in unit_slices(model):
        if s.is_bias and not biases:
            continue
        w = model.get_parameter(s.param).detach()
        nonzero = (_unit_view(w, s) != 0).any(dim=3).any(dim=1).any(dim=0)
        zero[s.layer] = zero[s.layer] & ~nonzero
    return zero


@torch.no_grad()
def compact(model: nn.Module, keep: list[torch.Tensor] | None = None) -> nn.Module:
    """A smaller model of standard modules holding only the kept units of every layer.

    ``keep`` is a per-layer bool tensor (default: units whose ISS component is not all zero). When the
    removed components are all zero, the compacted model computes exactly what the original does.
    """
    if keep is None:
        keep = [~z for z in removable_units(model)]
    kept_index = [k.nonzero().squeeze(1) for k in keep]
    sizes = [int(k.numel()) for k in kept_index]
    if min(sizes) == 0:
        raise ValueError(f"compaction would leave a layer with no units (sizes {sizes})")
    small = model.resized(sizes).to(model.decoder.weight.device, model.decoder.weight.dtype)
    by_param: dict[str, list[UnitSlice]] = {}
    for s in unit_slices(model):
        by_param.setdefault(s.param, []).append(s)
    source = dict(model.named_parameters())
    for name, target in small.named_parameters():
        value = source[name].detach()
        for s in by_param.get(name, []):
            shape = list(value.shape)
            shape[s.dim] = s.blocks * sizes[s.layer]
            value = _unit_view(value.contiguous(), s)[:, :, kept_index[s.layer], :].reshape(shape)
        target.copy_(value)
    return small


def nothing_to_remove(model: nn.Module, threshold: float | None) -> str:
    """Why a model has no removable ISS component: its smallest component norm, against the threshold
    below which single weights are zeroed when there is one."""
    norms = [sq.clamp_min(0).sqrt() for sq in group_sq_norms(model)]
    layer, smallest = min(((n, float(v.min())) for n, v in enumerate(norms)), key=lambda pair: pair[1])
    why = (f", and a component goes only when every weight in it falls below the zeroing threshold {threshold:g}"
           if threshold else "")
    return (f"no ISS component is all zero, nothing to remove: the smallest component norm is {smallest:.3g} "
            f"(layer {layer + 1}){why}; train with a larger lasso_lambda, or longer, or ask for a size "
            f"(--target-units, --target-multiply-adds)")


def compact_removable(model: nn.Module, threshold: float | None = None) -> nn.Module:
    """``model`` without every ISS component that is all zero (``compact``); a model with none is a
    ``Failure`` saying why (``nothing_to_remove``, with the run's zeroing ``threshold``)."""
    removable = removable_units(model)
    if not any(bool(units.any()) for units in removable):
        raise Failure(nothing_to_remove(model, threshold))
    return compact(model, [~units for units in removable])


def compacted_config(config: RunConfig, small: nn.Module) -> RunConfig:
    """The run config that rebuilds a compacted model: its layer sizes, and dense (its sparsity is gone)."""
    # built whole and validated once: sizes set one at a time would be checked against each other half-way
    # (a tied model whose embedding must equal the last layer's width)
    data = config.to_dict()
    data["model"] |= {"hidden_sizes": list(small.hidden_sizes), "embedding_size": small.embedding_size}
    data["sparsity"] = SparsityConfig().model_dump(mode="json")
    return validate(data, "compacted config")


def size_summary(model: nn.Module) -> dict[str, Any]:
    """What compaction changes: hidden sizes, parameters, and multiply-adds per token."""
    return {"hidden_sizes": list(model.hidden_sizes), "parameters": count_parameters(model),
            "multiply_adds": multiply_adds(discover(model), model.decoder.in_features,
                                           model.decoder.out_features)}


def recurrent_multiply_adds(model: nn.Module, sizes: list[float]) -> float:
    """Multiply-adds per token of the recurrent layers at other widths ``sizes`` (real numbers allowed,
    for root finding): each layer reads the one below, the first the embedding (tied: the last layer)."""
    stack = discover(model)
    tied = bool(getattr(model.config, "tie_weights", False))
    total = 0.0
    for n, layer in enumerate(stack):
        if n == 0:
            width = sizes[-1] if tied else layer.input_size
        else:
            width = sizes[n - 1] * (2 if stack[n - 1].bidirectional else 1)
        total += layer.spec.multiply_adds(width, sizes[n], layer.bidirectional, layer.depth)
    return total


def units_for_multiply_adds(model: nn.Module, ratio: float) -> list[int]:
    """Per-layer unit counts, every layer narrowed by the same fraction, whose recurrent multiply-adds
    are ``ratio`` times the model's (``ratio`` 0.25: about 4x fewer)."""
    full = [float(layer.hidden_size) for layer in discover(model)]
    return widths_for_multiply_adds(full, lambda sizes: recurrent_multiply_adds(model, sizes), ratio)


def widths_for_multiply_adds(full: list[float], count, ratio: float) -> list[int]:
    """Per-layer widths, ``full`` narrowed by one common fraction, whose ``count(sizes)`` (recurrent
    multiply-adds at those widths) is ``ratio`` times ``count(full)``."""
    from scipy.optimize import brentq

    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"a multiply-add ratio must be in (0, 1], got {ratio}")
    dense = count(full)
    if ratio == 1.0:
        return [int(h) for h in full]
    # the count is a polynomial in the common fraction f, increasing on (0, 1]: one root
    fraction = brentq(lambda f: count([f * h for h in full]) - ratio * dense, 1e-9, 1.0)
    return [max(1, round(fraction * h)) for h in full]


def zero_lines(model: nn.Module) -> dict[str, dict[str, int]]:
    """Per recurrent weight matrix, its all-zero rows and columns and their totals: the ISS that plain
    L1 reveals (ISS paper, Fig. 2) without being asked for structure."""
    lines = {}
    for layer in discover(model):
        module = model.get_submodule(layer.module)
        for name in layer.spec.weights(module):
            w = model.get_parameter(f"{layer.module}.{name}").detach()
            lines[f"{layer.module}.{name}"] = {"zero_rows": int((w == 0).all(dim=1).sum()), "rows": w.shape[0],
                                               "zero_columns": int((w == 0).all(dim=0).sum()), "columns": w.shape[1]}
    return lines
