"""Intrinsic Sparse Structures (Wen et al., ICLR 2018): group maps, group Lasso, compaction.

The k-th ISS component of recurrent layer n is every weight tied to its hidden unit k: the gate rows
``g*H + k`` of ``W_ih`` and ``W_hh`` (and of the biases, as an option), column k of ``W_hh``, and
column k of every receiver of the layer's output (the next layer's ``W_ih``, the decoder). For a
bidirectional layer component k is unit k of *both* directions (rows in both directions' matrices,
columns k and H + k of every receiver), so the compacted layer is still one bidirectional module.

Everything is derived from ``model.recurrent_stack()``: a "slice" says that dimension ``dim`` of a
parameter is indexed by the units of layer n in ``blocks`` blocks of H (row ``b*H + k``). Group
norms, the group-Lasso gradient and compaction all read the same slices.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsernn.config import RunConfig, SparsityConfig
from sparsernn.models.cells import UnitSlice
from sparsernn.models.lm import count_parameters
from sparsernn.models.stack import multiply_adds
from sparsernn.sparsity.registry import METHODS, Method

EPSILON = 1e-8  # ||w|| = sqrt(eps + sum w^2): differentiable at an all-zero group


def unit_slices(model: nn.Module) -> list[UnitSlice]:
    """Every parameter dimension indexed by some layer's hidden units, from the recurrent stack: each
    layer's own (its cell type says which), and the input columns of every receiver of its output."""
    if getattr(model.config, "tie_weights", False):
        # the decoder's columns would be the embedding's: removing a unit would change every input
        raise ValueError("ISS needs untied embedding and decoder weights (model.tie_weights is on)")
    stack = model.recurrent_stack()
    index = {layer.module: n for n, layer in enumerate(stack)}
    slices: list[UnitSlice] = []
    for n, layer in enumerate(stack):
        slices += layer.spec.unit_slices(layer.module, model.get_submodule(layer.module), n, layer.hidden_size)
        directions = 2 if layer.bidirectional else 1
        for receiver in layer.receivers:
            target = model.get_submodule(receiver)
            # a recurrent receiver reads the output through its input weights; any other (the decoder)
            # is a linear layer whose weight's columns are the output
            names = stack[index[receiver]].spec.input_weights(target) if receiver in index else ["weight"]
            slices += [UnitSlice(f"{receiver}.{name}", 1, n, directions, layer.hidden_size) for name in names]
    return slices


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
    stack = model.recurrent_stack()
    norms = [torch.zeros(layer.hidden_size, device=model.embedding.weight.device) for layer in stack]
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
    stack = model.recurrent_stack()
    zero = [torch.ones(layer.hidden_size, dtype=torch.bool, device=model.embedding.weight.device) for layer in stack]
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
    small = model.resized(sizes).to(model.embedding.weight.device, model.embedding.weight.dtype)
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


def nothing_to_remove(model: nn.Module, threshold: float) -> str:
    """Why a model has no removable ISS component: its smallest component norm against the threshold
    below which single weights are zeroed."""
    norms = [sq.clamp_min(0).sqrt() for sq in group_sq_norms(model)]
    layer, smallest = min(((n, float(v.min())) for n, v in enumerate(norms)), key=lambda pair: pair[1])
    return (f"no ISS component is all zero, nothing to remove: the smallest component norm is {smallest:.3g} "
            f"(layer {layer + 1}), and a component goes only when every weight in it falls below the zeroing "
            f"threshold {threshold:g}; train with a larger lasso_lambda, or longer")


def compacted_config(config: RunConfig, small: nn.Module) -> RunConfig:
    """The run config that rebuilds a compacted model: its layer sizes, and dense (its sparsity is gone)."""
    compacted = config.model_copy(deep=True)
    compacted.model.hidden_sizes = list(small.hidden_sizes)
    compacted.model.embedding_size = small.embedding_size
    compacted.sparsity = SparsityConfig()
    return compacted


def size_summary(model: nn.Module) -> dict[str, Any]:
    """What compaction changes: hidden sizes, parameters, and multiply-adds per token."""
    return {"hidden_sizes": list(model.hidden_sizes), "parameters": count_parameters(model),
            "multiply_adds": multiply_adds(model.recurrent_stack(), model.decoder.in_features,
                                           model.decoder.out_features)}


class GroupLasso:
    """Sparsifier: group Lasso over ISS components (``method: iss``) or plain L1 (``method: l1``).

    After backward it adds ``lambda * dR/dw`` to the gradients (R = sum over components of
    ``sqrt(eps + ||w_k||^2)``, or sum |w| for L1); after each step it zeroes weights below
    ``threshold`` and keeps every all-zero component at zero from then on, so removed structures
    stay removed. ``lambdas`` is one value or one per recurrent layer.
    """

    def __init__(self, lambdas: float | list[float], threshold: float = 1e-4, biases: bool = False,
                 mode: str = "group") -> None:
        self.lambdas = lambdas
        self.threshold = threshold
        self.biases = biases
        self.mode = mode
        self.model: nn.Module | None = None
        self.removed: list[torch.Tensor] = []

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.slices = [s for s in unit_slices(model) if self.biases or not s.is_bias]
        stack = model.recurrent_stack()
        if isinstance(self.lambdas, (int, float)):
            self.layer_lambdas = [float(self.lambdas)] * len(stack)
        else:
            if len(self.lambdas) != len(stack):
                raise ValueError(f"{len(self.lambdas)} lambdas for {len(stack)} recurrent layers")
            self.layer_lambdas = [float(v) for v in self.lambdas]
        self.removed = [torch.zeros(layer.hidden_size, dtype=torch.bool, device=model.embedding.weight.device)
                        for layer in stack]

    @torch.no_grad()
    def after_backward(self) -> None:
        # a component that is all zero now is removed for good: no gradient may revive it
        self.removed = [r | z for r, z in zip(self.removed, removable_units(self.model, self.biases))]
        self._zero_removed(grad=True)
        if self.mode == "l1":
            for name in {s.param for s in self.slices}:
                p = self.model.get_parameter(name)
                if p.grad is not None:
                    # the weight belongs to the L1 term once, whatever layers index it
                    lam = max(self.layer_lambdas[s.layer] for s in self.slices if s.param == name)
                    p.grad.add_(p.sign(), alpha=lam)
            return
        norms = [torch.sqrt(EPSILON + n.clamp_min(0)) for n in group_sq_norms(self.model, self.slices, self.biases)]
        factors = [lam / n for lam, n in zip(self.layer_lambdas, norms)]  # d sqrt(eps+||w||^2) / dw = w / norm
        scale: dict[str, torch.Tensor] = {}
        for s in self.slices:
            p = self.model.get_parameter(s.param)
            shape = [1] * 4
            shape[1], shape[2] = 1, s.hidden
            term = factors[s.layer].view(shape).expand(_unit_view(p, s).shape).reshape(p.shape)
            if s.crosses:
                term = term.clone()
                term.view(s.blocks, s.hidden, s.hidden).diagonal(dim1=1, dim2=2).sub_(factors[s.layer])
            scale[s.param] = scale[s.param] + term if s.param in scale else term
        for name, factor in scale.items():
            p = self.model.get_parameter(name)
            if p.grad is not None:
                p.grad.addcmul_(p, factor)

    @torch.no_grad()
    def after_step(self) -> None:
        for name in {s.param for s in self.slices}:
            p = self.model.get_parameter(name)
            p.masked_fill_(p.abs() < self.threshold, 0.0)
        zero = removable_units(self.model, self.biases)
        self.removed = [r | z for r, z in zip(self.removed, zero)]
        self._zero_removed(grad=False)

    def _zero_removed(self, grad: bool) -> None:
        for s in self.slices:
            if self.removed[s.layer].any():
                p = self.model.get_parameter(s.param)
                target = p.grad if grad else p
                if target is not None:
                    _unit_view(target, s)[:, :, self.removed[s.layer], :] = 0.0

    def kept(self) -> list[int]:
        """Components (hidden units) kept per layer."""
        return [int((~r).sum()) for r in self.removed]

    def end_epoch(self, epoch: int, metrics: dict) -> None:
        metrics["iss_sizes"] = self.kept()

    def describe(self) -> str:
        sizes = " ".join(f"{k}/{r.numel()}" for k, r in zip(self.kept(), self.removed))
        return f"units kept {sizes}" if self.mode == "group" else f"zero {self._zero_fraction():.3f}"

    def _zero_fraction(self) -> float:
        params = [self.model.get_parameter(name) for name in {s.param for s in self.slices if not s.is_bias}]
        return sum(int((p == 0).sum()) for p in params) / max(sum(p.numel() for p in params), 1)

    def state_dict(self) -> dict:
        return {"removed": list(self.removed)}

    def load_state_dict(self, state: dict) -> None:
        self.removed = [r.to(torch.bool) for r in state["removed"]]


# ---- the methods -----------------------------------------------------------------------------------


def _resolve(config) -> None:
    s = config.sparsity
    if s.density != 1.0:
        raise ValueError(f"sparsity.method {s.method} learns its sparsity: set lasso_lambda, not density")
    if s.method == "iss" and config.model.tie_weights:
        raise ValueError("sparsity.method iss needs model.tie_weights off (decoder columns would be embedding columns)")
    if s.lasso_lambda is None:
        raise ValueError(f"sparsity.method {s.method} needs sparsity.lasso_lambda (e.g. --lasso-lambda 0.001)")


def _builder(mode: str):
    def build(config, steps_per_epoch: int) -> GroupLasso:
        s = config.sparsity
        return GroupLasso(s.lasso_lambda, s.zero_threshold, s.group_biases, mode)

    return build


METHODS.register(Method("iss", "ISS (Wen et al. 2018): group Lasso over intrinsic sparse structures, then compact",
                        _builder("group"), ("lasso_lambda", "zero_threshold", "group_biases"), resolve=_resolve))
METHODS.register(Method("l1", "L1 regularisation over the same weights, zeroing below a threshold (unstructured)",
                        _builder("l1"), ("lasso_lambda", "zero_threshold"), resolve=_resolve))
