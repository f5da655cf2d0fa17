"""Compaction of a user's module: a copy without its all-zero ISS components (``sparsernn.compact``).

The components are those of ``sparsity.user_iss.discovered_slices`` (gate rows, ``W_hh`` columns, the
receivers' input columns); every parameter is cut along its slices with ``sparsity.iss``'s own view, so
the arithmetic is the toolkit's ISS compaction. Biases always count in a component here: a unit whose
weights are zero but whose bias is not still feeds its receivers a constant, and removing it would change
the outputs.

A multi-layer ``nn.LSTM``/``nn.GRU``/``nn.RNN`` whose layers keep the same width stays that module type,
narrower. When its layers end at different widths it becomes a ``LayerwiseRNN``: one 1-layer module per
layer, run in sequence, with the same call signature and the same ``output``; its final state cannot be
one ``(L*D, B, H)`` tensor, so ``h_n`` (and an LSTM's ``c_n``) is a tuple of per-layer tensors
``(D, B, H_l)`` — a caller that indexes ``h_n`` as one tensor must be changed for such a model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from sparsernn.errors import DiscoveryError
from sparsernn.models.cells import UnitSlice
from sparsernn.models.discovery import discover
from sparsernn.models.stack import RecurrentLayer
from sparsernn.sparsity.iss import _unit_view
from sparsernn.sparsity.user_iss import component_sq_norms, discovered_slices


class LayerwiseRNN(nn.Module):
    """Per-layer 1-layer RNN modules of possibly different widths, called like the multi-layer module
    they replace; ``h_n``/``c_n`` are tuples of per-layer ``(D, B, H_l)`` tensors (see the module doc)."""

    def __init__(self, layers: list[nn.RNNBase], dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.dropout = dropout
        self.batch_first = layers[0].batch_first

    def forward(self, x: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, Any]:
        lstm = isinstance(self.layers[0], nn.LSTM)
        finals: list[Any] = []
        for n, layer in enumerate(self.layers):
            state = None if hx is None else ((hx[0][n], hx[1][n]) if lstm else hx[n])
            x, final = layer(x, state)
            finals.append(final)
            if n < len(self.layers) - 1 and self.dropout and self.training:
                x = nn.functional.dropout(x, self.dropout, True)
        if lstm:
            return x, (tuple(f[0] for f in finals), tuple(f[1] for f in finals))
        return x, tuple(finals)


def removable(model: nn.Module, stack: tuple[RecurrentLayer, ...], slices: list[UnitSlice]) -> list[torch.Tensor]:
    """Per layer, True where unit k's whole component (biases included) is exactly zero."""
    return [v == 0 for v in component_sq_norms(model, stack, slices, biases=True)]


def _cut(model: nn.Module, slices: list[UnitSlice], keep: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every parameter touched by a slice, cut to the kept units of each layer indexing it."""
    by_param: dict[str, list[UnitSlice]] = {}
    for s in slices:
        by_param.setdefault(s.param, []).append(s)
    cut = {}
    for name, group in by_param.items():
        value = model.get_parameter(name).detach()
        for s in group:
            shape = list(value.shape)
            shape[s.dim] = s.blocks * len(keep[s.layer])
            value = _unit_view(value.contiguous(), s)[:, :, keep[s.layer].to(value.device), :].reshape(shape)
        cut[name] = value.clone()
    return cut


def _rebuilt_rnn(module: nn.RNNBase, path: str, widths: list[int], params: dict[str, torch.Tensor]) -> nn.Module:
    """The narrower module: the same type when every layer keeps one width, else a ``LayerwiseRNN``."""
    local = {name: params.get(f"{path}.{name}", p.detach()) for name, p in module.named_parameters()}
    kwargs = {"bias": module.bias, "batch_first": module.batch_first, "bidirectional": module.bidirectional}
    if isinstance(module, nn.RNN):
        kwargs["nonlinearity"] = module.nonlinearity
    kind = type(module)
    input_size = local["weight_ih_l0"].shape[1]
    if len(set(widths)) == 1:
        new = kind(input_size, widths[0], module.num_layers, dropout=module.dropout, **kwargs)
        new.load_state_dict(local)
        return new
    layers = []
    for index, width in enumerate(widths):
        own = {name.replace(f"_l{index}", "_l0"): value for name, value in local.items() if f"_l{index}" in name
               and name.split("_l")[-1].split("_")[0] == str(index)}
        layer = kind(own["weight_ih_l0"].shape[1], width, 1, **kwargs)
        layer.load_state_dict(own)
        layers.append(layer)
    return LayerwiseRNN(layers, module.dropout)


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


@torch.no_grad()
def compact(model: nn.Module, example_input: Any) -> nn.Module:
    """A copy of ``model`` without its all-zero ISS components: narrower recurrent layers and ``nn.Linear``
    heads (a tied ``nn.Embedding`` narrowed with its head, still tied), outputs equal to ``model``'s (a bidirectional layer's unit k is unit k of both directions, so it
    stays one bidirectional module). Refused in one line: a layer left with no units, a stack discovery
    cannot prove."""
    stack = discover(model, example_input)
    slices = discovered_slices(model, stack)
    keep = [(~zero).nonzero().squeeze(1) for zero in removable(model, stack, slices)]
    empty = [layer.name for layer, k in zip(stack, keep) if len(k) == 0]
    if empty:
        raise ValueError(f"compaction would leave layer {empty[0]} with no units")
    params = _cut(model, slices, keep)
    small = copy.deepcopy(model)
    modules = dict.fromkeys(layer.module for layer in stack)
    for path in modules:
        widths = [len(k) for layer, k in zip(stack, keep) if layer.module == path]
        device = next(model.get_submodule(path).parameters()).device
        _replace(small, path, _rebuilt_rnn(model.get_submodule(path), path, widths, params).to(device))
    for name, value in params.items():
        path = name.rpartition(".")[0]
        if path in modules:
            continue
        head = model.get_submodule(path)
        if not isinstance(head, nn.Linear):
            raise DiscoveryError(f"{path}: a {type(head).__name__} receiver cannot be compacted")
        new = nn.Linear(value.shape[1], head.out_features, head.bias is not None).to(value.device, value.dtype)
        new.weight.copy_(value)
        if head.bias is not None:
            new.bias.copy_(head.bias)
        _replace(small, path, new)
    _retie(model, small)
    return small.train(model.training)


def _retie(model: nn.Module, small: nn.Module) -> None:
    """Each ``nn.Embedding`` tied to a head that was rebuilt takes the new head's weight: as narrow as
    the head's input, and still tied."""
    heads = {id(m.weight): path for path, m in model.named_modules() if isinstance(m, nn.Linear)}
    for path, emb in model.named_modules():
        if not isinstance(emb, nn.Embedding) or id(emb.weight) not in heads:
            continue
        weight = small.get_submodule(heads[id(emb.weight)]).weight
        new = nn.Embedding(weight.shape[0], weight.shape[1], emb.padding_idx, emb.max_norm, emb.norm_type,
                           emb.scale_grad_by_freq, emb.sparse)
        new.weight = weight
        _replace(small, path, new)
