"""Masks over a model's prunable weights: the only code that writes zeros into weights and optimizer state.

Each mask is a bool buffer registered on the module that owns the weight, named ``<weight>_mask``
(``layers.0.weight_hh_l0_mask``), so masks live in the model's ``state_dict`` and checkpoints. Masks
are applied in place to the parameters themselves — for ``nn.LSTM`` these are its flat weights — so
training keeps PyTorch's fused kernels.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from sparsernn.models.discovery import discover

PRUNABLE_KINDS = ("embedding", "recurrent", "decoder")
MASK_SUFFIX = "_mask"


def prunable_parameters(model: nn.Module, kinds: Iterable[str] = PRUNABLE_KINDS) -> dict[str, nn.Parameter]:
    """Weight matrices to sparsify, by name; biases stay dense. A tied weight is listed once.

    ``recurrent`` takes every weight matrix of the layers that ``discover(model)`` describes
    (their cell types name them); ``embedding`` and ``decoder`` take those modules' weights.
    """
    kinds = set(kinds)
    unknown = kinds - set(PRUNABLE_KINDS)
    if unknown:
        raise ValueError(f"unknown prunable kinds {sorted(unknown)}; expected some of {PRUNABLE_KINDS}")
    names: list[str] = []
    if "embedding" in kinds:  # a sparse embedding's blocks, or the one weight matrix
        names += [f"embedding.{name}" for name, _ in model.embedding.named_parameters()]
    if "recurrent" in kinds:
        for layer in discover(model):
            names += [f"{layer.module}.{n}" for n in layer.spec.weights(model.get_submodule(layer.module))]
    if "decoder" in kinds:
        names.append("decoder.weight")
    params: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name in names:
        param = model.get_parameter(name)
        if id(param) not in seen:
            seen.add(id(param))
            params[name] = param
    return params


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    return model.get_submodule(module_name), attr


class Masking:
    """Bool masks for named parameters of ``model``, registered as buffers; all start all-True."""

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        self.model = model
        self.params: dict[str, nn.Parameter] = {}
        self.masks: dict[str, torch.Tensor] = {}
        for name in names:
            param = model.get_parameter(name)
            owner, attr = _owner(model, name)
            buffer_name = attr + MASK_SUFFIX
            if not hasattr(owner, buffer_name):
                owner.register_buffer(buffer_name, torch.ones_like(param, dtype=torch.bool))
            self.params[name] = param
            self.masks[name] = getattr(owner, buffer_name)

    def set(self, name: str, mask: torch.Tensor) -> None:
        self.masks[name].copy_(mask)

    @torch.no_grad()
    def apply(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero masked weights and, if given, the optimizer's per-weight state at masked positions
        (momentum, Adam moments, ASGD averages: every state tensor shaped like its weight)."""
        for name, param in self.params.items():
            # the bool mask read as uint8 (no copy): PyTorch multiplies by uint8 ~2x faster than by bool
            mask = self.masks[name].view(torch.uint8)
            param.mul_(mask)
            if optimizer is not None:
                for value in optimizer.state.get(param, {}).values():
                    if isinstance(value, torch.Tensor) and value.shape == param.shape:
                        value.mul_(mask)

    def active(self, name: str) -> int:
        return int(self.masks[name].sum())

    def nonzero_count(self) -> int:
        return sum(int(m.sum()) for m in self.masks.values())

    def total_count(self) -> int:
        return sum(m.numel() for m in self.masks.values())

    def density(self) -> float:
        return self.nonzero_count() / max(self.total_count(), 1)


def strip_masks(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without mask buffers (the weights are already zero where masked): for loading a
    sparse checkpoint into a plain model."""
    return {k: v for k, v in state_dict.items() if not k.endswith(MASK_SUFFIX)}


class MaskedSparsifier:
    """Shared part of mask-based sparsifiers: masks over the prunable weights, re-applied (weights and
    optimizer state) after every optimizer step, a step counter and a seeded generator."""

    def __init__(self, prunable: Iterable[str] = PRUNABLE_KINDS, seed: int = 0) -> None:
        self.prunable = tuple(prunable)
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0
        self.masking: Masking | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer, names: Iterable[str] | None = None) -> None:
        """Masks over ``names`` (qualified parameter names: any module's weights, as ``sparsernn.sparsify``
        picks them), or by default over the ``prunable`` kinds of the toolkit's own model."""
        self.masking = Masking(model, prunable_parameters(model, self.prunable) if names is None else names)
        self.optimizer = optimizer
        self.init_masks()
        self.masking.apply(optimizer)

    def init_masks(self) -> None:
        """Set the initial masks (subclasses)."""

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        self.step += 1
        self.masking.apply(self.optimizer)

    def end_epoch(self, epoch: int, metrics: dict) -> None:
        pass

    def describe(self) -> str:
        return f"density {self.masking.density():.3f}"

    def state_dict(self) -> dict:
        return {"step": self.step, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.generator.set_state(state["generator"].cpu())
