"""Shipping a model: ONNX export checked in ONNX Runtime for every model kind, the refusal of a file that
disagrees, and text generation reproducible by seed."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from conftest import cli_in_process, tiny_config
from sparsernn.deploy import ExportError, export_model, generate
from sparsernn.deploy.export import example_inputs
from sparsernn.deploy.wrap import deployable
from sparsernn.tasks import build_task
from sparsernn.train import Trainer

ort = pytest.importorskip("onnxruntime")  # installed by the test extra; a user without it gets the extra named


def model_of(corpus, **model):
    config = tiny_config(model=model)
    torch.manual_seed(0)
    return build_task(config, corpus, torch.device("cpu")).build_model(config.model).eval()


@pytest.mark.parametrize("model", [{"cell": "lstm"}, {"cell": "gru"}, {"cell": "rnn_tanh"},
                                   {"cell": "lstm", "hidden_sizes": [32, 12]},  # widths as compaction leaves them
                                   {"cell": "block_lstm"}])
def test_an_exported_model_computes_what_pytorch_does_at_other_lengths_and_batches(synthetic_corpus, tmp_path, model):
    net = model_of(synthetic_corpus, **model)
    path = tmp_path / "m.onnx"
    description = export_model(net, path, len(synthetic_corpus.vocab), sidecar={"vocab": list(synthetic_corpus.vocab.words)})
    assert description["max_abs_difference"] <= 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapped = deployable(net)
    for seq, batch in ((29, 2), (1, 5)):  # shapes the export's own check did not use
        inputs = example_inputs(wrapped, seq, batch, len(synthetic_corpus.vocab), seed=1)
        got = session.run(None, {n: t.numpy() for n, t in zip(["tokens", *wrapped.state_names()], inputs)})
        with torch.inference_mode():
            expected = wrapped(*inputs)
        assert len(got) == len(expected) == 1 + len(wrapped.state_names())
        for g, e in zip(got, expected):
            torch.testing.assert_close(torch.from_numpy(g), e, atol=1e-4, rtol=1e-4)
    tokens = inputs[0]  # the state left out: the text starts from zeros, as the model's does
    with torch.inference_mode():
        expected = wrapped(tokens, *wrapped.initial_state(tokens.shape[1]))
    for g, e in zip(session.run(None, {"tokens": tokens.numpy()}), expected, strict=True):
        torch.testing.assert_close(torch.from_numpy(g), e, atol=1e-4, rtol=1e-4)
    beside = json.loads((tmp_path / "m.onnx.json").read_text())
    assert beside["inputs"][0] == "tokens" and beside["outputs"][0] == "logits" and len(beside["vocab"]) > 10


def test_a_masked_sparse_run_exports_with_its_zeros(synthetic_corpus, tmp_path):
    config = tiny_config(sparsity={"method": "rigl", "density": 0.33}, train={"epochs": 1, "seed": 3},
                         data={"epoch_tokens": 800})
    Trainer(config, synthetic_corpus, tmp_path / "run").fit()
    line = cli_in_process("export", str(tmp_path / "run"), "-o", str(tmp_path / "m.onnx"))
    assert line.returncode == 0, line.stderr
    import onnx

    weights = [torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer]
    zeros = sum(int((w == 0).sum()) for w in weights if w.dim() >= 2)
    assert zeros > 0.5 * sum(w.numel() for w in weights if w.dim() == 3)  # the recurrent matrices stay sparse


def test_a_file_that_disagrees_is_refused_and_nothing_is_left(synthetic_corpus, tmp_path, monkeypatch):
    import sparsernn.deploy.export as export

    monkeypatch.setattr(export, "_check_onnx", lambda *args: 0.5)
    with pytest.raises(ExportError, match="not written, the exported model differs from PyTorch by 0.5"):
        export_model(model_of(synthetic_corpus, cell="lstm"), tmp_path / "m.onnx", len(synthetic_corpus.vocab))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, message", [("m.txt", "expected a .onnx file name (or .pt2 for torch.export)"),
                                           ("nowhere/m.onnx", "does not exist")])
def test_bad_targets_are_one_line(synthetic_corpus, tmp_path, name, message):
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_model(model_of(synthetic_corpus, cell="lstm"), tmp_path / name, len(synthetic_corpus.vocab))


def test_a_missing_extra_is_named(synthetic_corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match=r'pip install "sparsernn\[deploy\]"'):
        export_model(model_of(synthetic_corpus, cell="lstm"), tmp_path / "m.onnx", len(synthetic_corpus.vocab))


def test_generation_is_greedy_at_temperature_zero_and_reproducible_by_seed(synthetic_corpus):
    net, vocab = model_of(synthetic_corpus, cell="lstm"), synthetic_corpus.vocab
    prompt = " ".join(vocab.words[5:8])
    greedy = generate(net, vocab, prompt, 8, temperature=0)
    assert greedy == generate(net, vocab, prompt, 8, temperature=0, seed=5) and len(greedy) == 8
    first = generate(net, vocab, prompt, 12, temperature=1.0, top_k=5, seed=1)
    assert first == generate(net, vocab, prompt, 12, temperature=1.0, top_k=5, seed=1)
    assert first != generate(net, vocab, prompt, 12, temperature=1.0, top_k=5, seed=2)
    assert all(word in vocab for word in first)


def test_generate_through_the_cli(synthetic_corpus, tmp_path):
    config = tiny_config(train={"epochs": 1}, data={"epoch_tokens": 800})
    Trainer(config, synthetic_corpus, tmp_path / "run").fit()
    result = cli_in_process("generate", str(tmp_path / "run"), "--prompt", "the", "--tokens", "5",
                            "--temperature", "0")
    assert result.returncode == 0 and len(result.stdout.split()) == 6
    assert "temperature" in cli_in_process("generate", str(tmp_path / "run"), "--temperature", "-1").one_line_error()


def test_a_tagger_exports_through_the_cli_with_its_tag_set(tmp_path):
    from test_tagging import write_corpus

    write_corpus(tmp_path / "pos")
    trained = cli_in_process("tag", "train", "--data-dir", str(tmp_path / "pos"), "--epochs", "1", "--device", "cpu",
                             "--out", str(tmp_path / "tagger"))
    assert trained.returncode == 0, trained.stderr
    result = cli_in_process("export", str(tmp_path / "tagger"), "-o", str(tmp_path / "t.onnx"))
    assert result.returncode == 0 and "max difference" in result.stdout, result.stderr
    beside = json.loads((tmp_path / "t.onnx.json").read_text())
    assert beside["kind"] == "tagging" and beside["inputs"] == ["tokens"] and beside["outputs"] == ["logits"]
