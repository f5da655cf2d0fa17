"""One path (issue 27, point 4): every consumer reads a model's recurrent stack through
``discovery.discover``; for the toolkit's own models built of ``nn.LSTM``/``nn.GRU``/``nn.RNN`` layers the
hook-based discovery a user's module goes through finds exactly the stack they declare. For cells the
hooks cannot see as one PyTorch RNN (an RHN's micro-layers, parallel block LSTMs) the declared
``recurrent_stack()`` is the description, and tracing refuses in one line rather than guess."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch

from sparsernn.config import ModelConfig
from sparsernn.errors import DiscoveryError
from sparsernn.models import RNNLanguageModel, SequenceTagger
from sparsernn.models.discovery import declares_stack, discover, trace_stack

SRC = Path(__file__).resolve().parents[1] / "src" / "sparsernn"


def _declared_form(stack) -> list[tuple]:
    """A traced stack in the toolkit's naming: a one-layer module's layer 0 (``layers.1[0]``) is the module."""
    plain = lambda name: re.sub(r"\[0\]$", "", name)
    return [(plain(layer.name), layer.cell, layer.input_size, layer.hidden_size, layer.bidirectional,
             tuple(plain(r) for r in layer.receivers)) for layer in stack]


def _fields(stack) -> list[tuple]:
    return [(layer.name, layer.cell, layer.input_size, layer.hidden_size, layer.bidirectional, layer.receivers)
            for layer in stack]


@pytest.mark.parametrize("cell,layers,tied", list(itertools.product(("lstm", "gru", "rnn_tanh"), (1, 2),
                                                                    (False, True))))
def test_hooks_find_the_stack_the_language_model_declares(cell: str, layers: int, tied: bool) -> None:
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(cell=cell, hidden_sizes=[6] * layers, embedding_size=6, tie_weights=tied), 13)
    tokens = torch.randint(0, 13, (5, 3))
    traced, _ = trace_stack(model, (tokens, model.init_state(3)))
    assert _declared_form(traced) == _fields(model.recurrent_stack()) == _fields(discover(model))
    assert traced[-1].receivers == (("decoder", "embedding") if tied else ("decoder",))


@pytest.mark.parametrize("cell,layers,projection", list(itertools.product(("lstm", "gru", "rnn_tanh"), (1, 2),
                                                                          (None, 4))))
def test_hooks_find_the_stack_the_tagger_declares(cell: str, layers: int, projection: int | None) -> None:
    torch.manual_seed(0)
    model = SequenceTagger(ModelConfig(cell=cell, hidden_sizes=[6] * layers, embedding_size=5,
                                       projection_size=projection), 13, 7)
    traced, _ = trace_stack(model, torch.randint(0, 13, (5, 3)))
    assert _declared_form(traced) == _fields(model.recurrent_stack())
    assert traced[-1].receivers == ("projection" if projection else "decoder",)


@pytest.mark.parametrize("cell, names", [("rhn", "RNNLanguageModel: no nn.LSTM"), ("block_lstm", "layers.0.segments.0:")])
def test_cells_the_hooks_cannot_see_are_refused_and_their_declaration_stands(cell: str, names: str) -> None:
    model = RNNLanguageModel(ModelConfig(cell=cell, hidden_sizes=[6, 6], embedding_size=6), 13)
    tokens = torch.randint(0, 13, (5, 3))
    with pytest.raises(DiscoveryError) as info:
        trace_stack(model, (tokens, model.init_state(3)))
    assert str(info.value).startswith(names) and "\n" not in str(info.value)
    assert declares_stack(model) and [layer.cell for layer in discover(model)] == [cell, cell]


def test_no_consumer_reads_the_declaration_directly() -> None:
    """Masks, ISS, Lasso, reports, Jacobians, the spectrum and the plots all go through ``discover``."""
    for path in SRC.rglob("*.py"):
        if path.name == "discovery.py":
            continue
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith(("#", '"')))
        assert not re.search(r"\.recurrent_stack\(\)", code), path
        assert 'hasattr(model, "recurrent_stack")' not in code, path
