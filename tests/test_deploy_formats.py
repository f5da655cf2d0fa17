"""Both export formats for every model kind: ONNX (run in ONNX Runtime) and torch.export's ``.pt2``
(read back with ``torch.export.load``), each run at shapes the export's own check did not use and compared
with PyTorch; a layer whose loop over time cannot stay one loop is refused in one line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import tiny_config
from sparsernn.config import ModelConfig
from sparsernn.deploy import ExportError, export_model
from sparsernn.deploy.export import CHECK_SHAPES, example_inputs
from sparsernn.deploy.wrap import deployable
from sparsernn.models.lm import RNNLanguageModel
from sparsernn.models.tagger import SequenceTagger

VOCAB = 30
# (sequence, batch) of the comparisons here: none is a shape the export's own check ran
SHAPES = ((5, 2), (1, 4))
KINDS = {
    "lstm": {"cell": "lstm"},
    "gru": {"cell": "gru"},
    "rnn_tanh": {"cell": "rnn_tanh"},
    "sparse_embedding": {"cell": "gru", "embedding_density": 0.5},
    "compacted": {"cell": "lstm", "hidden_sizes": [12, 5]},  # widths as compaction leaves them
    "block_lstm": {"cell": "block_lstm", "segments": [2]},
    "block_lstm_masked": {"cell": "block_lstm", "segments": [2], "gamma": [0.5], "block_form": "masked"},
    "rhn": {"cell": "rhn", "depth": 2},
    "rhn_uncoupled": {"cell": "rhn_uncoupled", "depth": 2},
    "tagger": None,
}


def build(kind: str) -> nn.Module:
    """A tiny model of ``kind`` in eval mode (a bidirectional LSTM tagger for ``tagger``)."""
    torch.manual_seed(0)
    if KINDS[kind] is None:
        config = ModelConfig(hidden_sizes=[8, 6], embedding_size=5, projection_size=4)
        return SequenceTagger(config, vocab_size=VOCAB, num_tags=5).eval()
    config = tiny_config(model={"hidden_sizes": [12, 8], **KINDS[kind]})
    return RNNLanguageModel(config.model, VOCAB).eval()


def read_back(path: Path) -> Callable[[tuple[torch.Tensor, ...]], list[torch.Tensor]]:
    """The written file as a user runs it: an ONNX Runtime session, or the loaded ``.pt2`` program."""
    if path.suffix == ".pt2":
        program = torch.export.load(str(path)).module()
        return lambda inputs: list(program(*inputs))
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # the state inputs have zero defaults: ONNX Runtime lists them apart from the required tokens
    names = [i.name for i in [*session.get_inputs(), *session.get_overridable_initializers()]]
    return lambda inputs: [torch.from_numpy(g) for g in session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})]


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_computes_what_pytorch_does_at_shapes_the_check_did_not_use(tmp_path, kind, suffix):
    net = build(kind)
    layers = [type(layer) for layer in net.layers]
    path = tmp_path / f"m{suffix}"
    description = export_model(net, path, VOCAB, sidecar={"kind": kind})
    assert description["format"] == suffix[1:] and description["max_abs_difference"] <= 1e-4
    assert [type(layer) for layer in net.layers] == layers  # the export forms were swapped back out
    assert not set(SHAPES) & {tuple(s) for s in CHECK_SHAPES}
    wrapped, run = deployable(net), read_back(path)
    for seq, batch in SHAPES:
        inputs = example_inputs(wrapped, seq, batch, VOCAB, seed=11)
        with torch.inference_mode():
            expected = wrapped(*inputs)
        got = run(inputs)
        assert len(got) == len(expected) == 1 + len(wrapped.state_names())
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)
    beside = json.loads((tmp_path / f"m{suffix}.json").read_text())
    assert beside["format"] == suffix[1:] and beside["kind"] == kind and beside["inputs"][0] == "tokens"


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_an_exported_rhn_continues_a_text_in_pieces_as_the_model_does(tmp_path, suffix):
    net = build("rhn")
    export_model(net, tmp_path / f"m{suffix}", VOCAB)
    run, wrapped = read_back(tmp_path / f"m{suffix}"), deployable(net)
    tokens, *state = example_inputs(wrapped, 9, 2, VOCAB, seed=3)
    first = run((tokens[:4], *state))
    second = run((tokens[4:], *first[1:]))
    with torch.inference_mode():
        whole = wrapped(tokens, *state)
    torch.testing.assert_close(torch.cat([first[0], second[0]]), whole[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(second[1], whole[1], atol=1e-4, rtol=1e-4)


def test_a_pt2_export_needs_no_onnx_runtime(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert export_model(build("gru"), tmp_path / "m.pt2", VOCAB)["max_abs_difference"] <= 1e-4


class SteppedRNN(nn.Module):
    """A recurrent layer that steps an ``nn.RNNCell`` in Python, as a user's own cell might: neither
    exporter can keep its loop over time one loop."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.cell = nn.RNNCell(input_size, hidden_size)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, outputs = state[0], []
        for x_t in x.unbind(0):
            h = self.cell(x_t, h)
            outputs.append(h)
        return torch.stack(outputs), h.unsqueeze(0)


def stepped(kind: str = "rnn_tanh") -> nn.Module:
    """A language model whose first layer is a ``SteppedRNN``."""
    net = build(kind)
    net.layers[0] = SteppedRNN(net.layers[0].input_size, net.layers[0].hidden_size).eval()
    return net


def test_a_layer_whose_loop_cannot_stay_one_loop_is_refused_by_torch_export_in_one_line(tmp_path):
    with pytest.raises(ExportError) as refused:
        export_model(stepped(), tmp_path / "m.pt2", VOCAB)
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith("torch.export (.pt2) of RNNLanguageModel (layers: RNN, SteppedRNN) failed: "
                                         "its loop over time fixes the sequence length to 7; export to .onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_layer_whose_loop_cannot_stay_one_loop_is_refused_by_the_onnx_check_in_one_line(tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(ExportError) as refused:
        export_model(stepped(), tmp_path / "m.onnx", VOCAB)  # unrolled for 7 steps, the file cannot run 13
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith(f"{tmp_path / 'm.onnx'}: not written, the exported file fails at "
                                         "(sequence, batch) (13, 1): [ONNXRuntimeError]")
    assert list(tmp_path.iterdir()) == []


def test_a_file_name_of_neither_format_is_refused(tmp_path):
    with pytest.raises(ExportError, match=r"expected a \.onnx file name \(or \.pt2 for torch\.export\)"):
        export_model(build("lstm"), tmp_path / "m.pt", VOCAB)


def test_a_refused_torch_export_does_not_spoil_the_next_one(tmp_path):
    # dynamo's caches kept traces of the refused export and the next model specialised its sequence length
    with pytest.raises(ExportError):
        export_model(stepped(), tmp_path / "bad.pt2", VOCAB)
    assert export_model(build("lstm"), tmp_path / "m.pt2", VOCAB)["max_abs_difference"] <= 1e-4
