"""int8 and ONNX Runtime as a runtime: dynamic int8 in PyTorch and on an exported file, judged by the
task's metric; an exported file evaluated and generating text exactly as the model it came from."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import cli_in_process, tiny_config
from sparsernn.deploy import OnnxModel, export_model, generate, quantizable_modules, quantize_model, weight_bytes
from sparsernn.tasks import build_task
from sparsernn.train import Trainer

pytest.importorskip("onnxruntime")  # installed by the test extra


@pytest.fixture(scope="module")
def trained_run(synthetic_corpus, synthetic_dir, tmp_path_factory):
    """A small LSTM LM trained long enough that its perplexity means something (well below uniform)."""
    directory = tmp_path_factory.mktemp("int8") / "run"
    config = tiny_config(model={"hidden_sizes": [48, 48]}, train={"epochs": 3}, data={"epoch_tokens": 6000})
    Trainer(config, synthetic_corpus, directory).fit()
    DATA[directory] = str(synthetic_dir)  # trained on a corpus object: its directory is given, as --data-dir
    return directory


DATA: dict = {}


def task_and_model(run):
    from sparsernn.launch import model_and_task

    _, model, _, task = model_and_task(run, DATA.get(run), "cpu")
    return task, model


def test_int8_in_pytorch_replaces_the_recurrent_and_linear_layers_and_keeps_the_metric(trained_run):
    task, model = task_and_model(trained_run)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_model(model)
    kinds = {name: type(module).__name__ for name, module in quantized.named_modules()}
    assert kinds["layers.0"] == kinds["layers.1"] == "LSTM" and "quantized" in type(quantized.layers[0]).__module__
    assert "quantized" in type(quantized.decoder).__module__ and isinstance(quantized.embedding, nn.Embedding)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the float model is untouched
    float_ppl = task.evaluate(model, "valid")["ppl"]
    int8_ppl = task.evaluate(quantized, "valid")["ppl"]
    assert float_ppl < 0.75 * len(task.corpus.vocab)  # learned something, so the comparison is not vacuous
    assert abs(int8_ppl / float_ppl - 1) < 0.02 and int8_ppl != float_ppl
    names = quantizable_modules(model)
    assert names == ["layers.0", "layers.1", "decoder"]
    embedding = model.embedding.weight.numel() * 4
    assert weight_bytes(model, names) - embedding < 0.3 * (weight_bytes(model) - embedding)  # int8: ~1/4 the bytes


def test_a_masked_block_lstm_keeps_its_lstm_float_and_still_runs(synthetic_corpus):
    config = tiny_config(model={"cell": "block_lstm", "block_form": "masked"})
    model = build_task(config, synthetic_corpus, "cpu").build_model(config.model).eval()
    assert quantizable_modules(model) == ["decoder"]  # its forward multiplies the LSTM's weights by the masks
    tokens = torch.randint(0, len(synthetic_corpus.vocab), (6, 2))
    with torch.inference_mode():
        expected, _ = model(tokens, model.init_state(2))
        got, _ = quantize_model(model)(tokens, model.init_state(2))
    assert got.shape == expected.shape and (got - expected).abs().max() < 0.05


def test_an_exported_file_evaluates_and_writes_text_as_the_model_does(trained_run, tmp_path):
    task, model = task_and_model(trained_run)
    vocab = task.corpus.vocab
    path = tmp_path / "m.onnx"
    export_model(model, path, len(vocab), sidecar={"vocab": list(vocab.words)})
    onnx_model = OnnxModel(path)
    expected, got = task.evaluate(model, "valid"), task.evaluate(onnx_model, "valid")
    assert got["ppl"] == pytest.approx(expected["ppl"], rel=1e-5)
    prompt = " ".join(vocab.words[4:7])
    for options in ({"temperature": 0}, {"temperature": 1.0, "top_k": 8, "seed": 4}):
        assert generate(onnx_model, vocab, prompt, 10, **options) == generate(model, vocab, prompt, 10, **options)


def test_export_int8_through_the_cli_prints_both_metrics_and_writes_a_smaller_file(trained_run, tmp_path):
    float_file, int8_file = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    assert cli_in_process("export", str(trained_run), "-o", str(float_file)).returncode == 0
    result = cli_in_process("export", str(trained_run), "-o", str(int8_file), "--quantize", "int8",
                            "--data-dir", DATA[trained_run])
    assert result.returncode == 0, result.stderr
    assert "float (PyTorch)" in result.stdout and "int8 (ONNX Runtime)" in result.stdout
    assert int8_file.stat().st_size < 0.6 * float_file.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.onnx", "float.onnx.json", "int8.onnx", "int8.onnx.json"]
    beside = json.loads((tmp_path / "int8.onnx.json").read_text())
    assert "int8" in beside["quantized"] and beside["float_max_abs_difference"] <= 1e-4
    task, model = task_and_model(trained_run)
    float_ppl = task.evaluate(model, "valid")["ppl"]
    assert task.evaluate(OnnxModel(int8_file), "valid")["ppl"] == pytest.approx(float_ppl, rel=0.03)
    text = cli_in_process("generate", str(int8_file), "--prompt", "the", "--tokens", "4", "--temperature", "0")
    assert text.returncode == 0 and len(text.stdout.split()) == 5, text.stderr


def test_quantize_command_prints_metric_and_size(trained_run):
    result = cli_in_process("quantize", str(trained_run), "--data-dir", DATA[trained_run])
    assert result.returncode == 0, result.stderr
    assert "int8 (PyTorch)" in result.stdout and "MiB" in result.stdout


def test_int8_needs_an_onnx_name_and_generate_names_what_it_cannot_read(trained_run, tmp_path):
    line = cli_in_process("export", str(trained_run), "-o", str(tmp_path / "m.pt2"), "--quantize", "int8").one_line_error()
    assert "writes ONNX" in line and not any(tmp_path.iterdir())
    assert "no such file" in cli_in_process("generate", str(tmp_path / "none.onnx")).one_line_error()
    assert "torch.export.load" in cli_in_process("generate", str(tmp_path / "m.pt2")).one_line_error()


def test_an_exported_tagger_scores_padded_sentences_as_pytorch_does(tmp_path):
    from test_tagging import write_corpus

    write_corpus(tmp_path / "pos")
    trained = cli_in_process("tag", "train", "--data-dir", str(tmp_path / "pos"), "--epochs", "1", "--device", "cpu",
                             "--out", str(tmp_path / "tagger"))
    assert trained.returncode == 0, trained.stderr
    assert cli_in_process("export", str(tmp_path / "tagger"), "-o", str(tmp_path / "t.onnx")).returncode == 0
    task, model = task_and_model(tmp_path / "tagger")
    assert len({len(s[0]) for s in task.corpus.split("valid")}) > 1  # sentences of several lengths: padding
    expected, got = task.evaluate(model, "valid"), task.evaluate(OnnxModel(tmp_path / "t.onnx"), "valid")
    # a near-tie may flip one prediction between two float paths: within one token in a thousand
    assert got["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-3)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)


def test_bad_targets_and_a_wrong_data_dir_are_one_line_and_leave_nothing(trained_run, tmp_path):
    (tmp_path / "taken.onnx").mkdir()
    assert "is a directory" in cli_in_process("export", str(trained_run), "-o", str(tmp_path / "taken.onnx")).one_line_error()
    line = cli_in_process("export", str(trained_run), "-o", str(tmp_path / "no" / "m.onnx"), "--quantize", "int8")
    assert f"{tmp_path / 'no' / 'm.onnx'}: directory" in line.one_line_error()  # the file asked for, not a temporary
    line = cli_in_process("quantize", str(trained_run), "--data-dir", str(tmp_path / "nowhere"))
    assert "nowhere" in line.one_line_error()  # asked for explicitly: an error, not a note
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx"]


def test_int8_export_leaves_logging_and_the_models_mode_as_they_were(trained_run, tmp_path):
    import logging

    from sparsernn.deploy import export_int8

    task, model = task_and_model(trained_run)
    root = logging.getLogger()
    level = root.level
    model.train()
    export_int8(model, tmp_path / "m.onnx", len(task.corpus.vocab))
    assert root.level == level and model.training


def test_an_int8_gru_file_says_its_gru_stayed_float(synthetic_corpus, tmp_path):
    from sparsernn.deploy import export_int8

    config = tiny_config(model={"cell": "gru"})
    model = build_task(config, synthetic_corpus, "cpu").build_model(config.model)
    description = export_int8(model, tmp_path / "m.onnx", len(synthetic_corpus.vocab))
    assert description["operators"] == {"int8": ["MatMul"], "float": ["GRU", "GRU"]}


def test_an_int8_pytorch_module_is_refused_by_export_in_one_line(trained_run, tmp_path):
    from sparsernn.deploy import ExportError

    task, model = task_and_model(trained_run)
    with pytest.raises(ExportError, match="export the float model with --quantize int8"):
        export_model(quantize_model(model), tmp_path / "m.onnx", len(task.corpus.vocab))


def test_tied_weights_count_once_as_float_and_again_as_the_decoders_int8_copy(synthetic_corpus):
    config = tiny_config(model={"hidden_sizes": [32, 32], "tie_weights": True})
    model = build_task(config, synthetic_corpus, "cpu").build_model(config.model)
    floats = sum(p.numel() for p in model.parameters()) * 4  # parameters() lists the shared weight once
    assert weight_bytes(model) == floats
    shared = model.decoder.weight.numel()
    assert weight_bytes(model, ["decoder"]) == floats + shared  # the embedding keeps the float copy
