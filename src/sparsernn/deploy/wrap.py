"""One call signature for every model the toolkit trains, the one an exported file has:
``(tokens, *state) -> (logits, *state)``, tokens in the model's own layout ``(sequence, batch)``.

A language model's carried state (one tensor per layer, or ``(h, c)`` per LSTM layer) travels as flat
tensors, so that a caller continues a text in pieces exactly as the model does; a tagger carries none.
"""

from __future__ import annotations

import torch
from torch import nn


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
        return [t for s in self.model.init_state(batch_size) for t in (s if isinstance(s, tuple) else (s,))]

    def state_names(self) -> list[str]:
        return [f"state_{layer}_{part}" for layer, parts in enumerate(self.layout) for part in range(parts)]

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.carries_state:
            return (self.model(tokens),)
        nested, i = [], 0
        for parts in self.layout:
            nested.append(tuple(state[i:i + parts]) if parts > 1 else state[i])
            i += parts
        logits, new_state = self.model(tokens, nested)
        flat = [t for s in new_state for t in (s if isinstance(s, tuple) else (s,))]
        return (logits, *flat)


def deployable(model: nn.Module) -> DeployableModel:
    """``model`` (in eval mode, its masks already applied to its weights) behind the flat signature."""
    return DeployableModel(model.eval()).eval()
