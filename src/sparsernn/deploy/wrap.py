"""One call signature for every model the toolkit trains, the one an exported file has:
``(tokens, *state) -> (logits, *state)``, tokens in the model's own layout ``(sequence, batch)``.

A language model's carried state (one tensor per layer, or ``(h, c)`` per LSTM layer) travels as flat
tensors, so that a caller continues a text in pieces exactly as the model does; a tagger carries none.
"""

from __future__ import annotations

import torch
from torch import nn


def flatten_state(state) -> list[torch.Tensor]:
    """A model's state (per layer a tensor or a tuple of them) as the flat list a file carries."""
    return [t for s in state for t in (s if isinstance(s, tuple) else (s,))]


def nest_state(flat, layout: list[int]) -> list:
    """The flat list back in the model's nesting; ``layout``: how many tensors each layer has."""
    nested, i = [], 0
    for parts in layout:
        nested.append(tuple(flat[i:i + parts]) if parts > 1 else flat[i])
        i += parts
    return nested


class DeployableModel(nn.Module):
    """``model`` behind the flat signature; ``state_shapes(batch)`` names the state tensors' shapes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.carries_state = hasattr(model, "init_state")
        # how many tensors each layer's state has (an LSTM layer: 2, h and c), read once from a batch of 1
        self.layout = [len(s) if isinstance(s, tuple) else 1 for s in model.init_state(1)] if self.carries_state else []

    def initial_state(self, batch_size: int) -> list[torch.Tensor]:
        if not self.carries_state:
            return []
        return flatten_state(self.model.init_state(batch_size))

    def state_names(self) -> list[str]:
        return [f"state_{layer}_{part}" for layer, parts in enumerate(self.layout) for part in range(parts)]

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.carries_state:
            return (self.model(tokens),)
        logits, new_state = self.model(tokens, nest_state(state, self.layout))
        return (logits, *flatten_state(new_state))


def deployable(model: nn.Module) -> DeployableModel:
    """``model`` (in eval mode, its masks already applied to its weights) behind the flat signature."""
    return DeployableModel(model.eval()).eval()
