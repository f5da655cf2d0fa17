"""torch.export (``.pt2``) of a deployable model, batch and sequence length dynamic.

Every recurrent layer is exported in its scan form (``recurrence.torch_export_form``): traced as it
is, torch.export unrolls the time loop and fixes the sequence length to the example's. The program is
saved with ``torch.export.save`` and read back with ``torch.export.load``, which needs PyTorch only
(neither ONNX Runtime nor sparsernn). ``export.export_model`` checks the file read back before it
moves it into place, and turns this module's exceptions into one-line export errors.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.export import Dim

from sparsernn.deploy.recurrence import export_forms, torch_export_form
from sparsernn.deploy.wrap import DeployableModel


class SpecialisedLength(RuntimeError):
    """torch.export fixed the sequence length: some layer's loop over time has no export form."""


def dynamic_shapes(inputs: Sequence[torch.Tensor]) -> tuple:
    """Tokens ``(sequence, batch)`` and each state tensor's batch axis (``(layers, batch, hidden)``),
    in the structure of ``DeployableModel.forward(tokens, *state)``; one ``batch`` shared by all."""
    sequence, batch = Dim("sequence", min=1), Dim("batch", min=1)
    tokens = {0: sequence, 1: batch}
    if len(inputs) == 1:  # a model without carried state (a tagger): no ``*state`` entry at all
        return (tokens,)
    return tokens, tuple({t.dim() - 2: batch} for t in inputs[1:])


def write_pt2(wrapped: DeployableModel, inputs: Sequence[torch.Tensor], path: Path) -> None:
    """Export ``wrapped`` with its recurrent layers in scan form and save the program to ``path``."""
    # a refused export leaves traces in dynamo's caches that make the next one specialise its sequence length
    # (a stepped layer refused, then an LSTM model: "specialized it to be a constant (7)"): start clean
    torch._dynamo.reset()
    with warnings.catch_warnings(), export_forms(wrapped, torch_export_form):
        warnings.simplefilter("ignore")  # prototype-feature notes on scan; nothing a user can act on
        try:
            program = torch.export.export(wrapped, tuple(inputs), dynamic_shapes=dynamic_shapes(inputs), strict=False)
        except Exception as exc:
            if "Constraints violated (sequence)" in str(exc):
                raise SpecialisedLength(f"its loop over time fixes the sequence length to {inputs[0].shape[0]}; "
                                        "export to .onnx, or give the layer an export form") from None
            raise
    torch.export.save(program, str(path))


def load_pt2(path: Path) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The saved program as a callable ``(tokens, *state) -> (logits, *state)``, as a user loads it."""
    return torch.export.load(str(path)).module()
