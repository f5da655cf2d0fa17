from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparsernn import checkpoint
from sparsernn.errors import CheckpointError


def test_nested_state_round_trips_through_tensors_and_json(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "best": None, "sizes": [1, 2]}
    tensors: dict[str, torch.Tensor] = {}
    skeleton = checkpoint.pack(state, "resume", tensors)
    checkpoint.save(tmp_path / "c.safetensors", tensors, {"resume": skeleton})
    loaded, meta = checkpoint.load(tmp_path / "c.safetensors")
    restored = checkpoint.unpack(meta["resume"], loaded)
    fresh = torch.optim.Adam(model.parameters())
    fresh.load_state_dict(restored["optimizer"])  # int-keyed state and tuples survive
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(torch.as_tensor(fresh.state_dict()["state"][0][key]), torch.as_tensor(value))
    assert torch.equal(restored["rng"], state["rng"]) and restored["best"] is None and restored["sizes"] == [1, 2]
    assert (tmp_path / "c.json").is_file()  # readable copy of the metadata


def test_shared_tensors_are_stored_once_and_restored_as_aliases(tmp_path):
    weight = torch.randn(100, 40)
    checkpoint.save(tmp_path / "t.safetensors", {"a": weight, "b": weight}, {})
    tensors, meta = checkpoint.load(tmp_path / "t.safetensors")
    assert meta["aliases"] == {"b": "a"} and tensors["b"] is tensors["a"] and torch.equal(tensors["a"], weight)
    assert (tmp_path / "t.safetensors").stat().st_size < weight.numel() * 4 * 2


def test_save_leaves_no_temporary_files(tmp_path):
    checkpoint.save(tmp_path / "x.safetensors", {"w": torch.ones(2)}, {})
    checkpoint.save(tmp_path / "x.safetensors", {"w": torch.zeros(2)}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]
    assert torch.equal(checkpoint.load(tmp_path / "x.safetensors")[0]["w"], torch.zeros(2))


@pytest.mark.parametrize(
    "content,expected",
    [(None, "checkpoint not found"), (b"not a checkpoint at all", "not a safetensors file")],
)
def test_bad_checkpoint_files_give_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "bad.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        checkpoint.load(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    checkpoint.save(tmp_path / "x.safetensors", {"w": torch.ones(1000)}, {})
    raw = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "x.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        checkpoint.load(tmp_path / "x.safetensors")


def test_plain_safetensors_without_our_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="without sparsernn metadata"):
        checkpoint.load(tmp_path / "plain.safetensors")


FIXTURE = Path(__file__).parent / "fixtures" / "v0.1"  # written by sparsernn 0.1 (a 6x5 RigL LSTM LM)


def test_a_model_saved_by_version_0_1_still_loads_and_scores_the_same():
    from sparsernn.data import batchify, load_corpus
    from sparsernn.runs import load_model
    from sparsernn.tasks.lm import evaluate

    model, config, vocab, meta = load_model(FIXTURE / "best.safetensors")
    corpus = load_corpus(FIXTURE / "corpus")
    assert vocab == corpus.vocab and config.sparsity.method == "rigl" and model.hidden_sizes == [6, 5]
    loss = evaluate(model, batchify(corpus.valid, config.data.eval_batch_size), config.data.bptt)
    assert loss == pytest.approx(2.5721065479776133, rel=1e-12)  # the valid loss 0.1 recorded


def test_a_resume_state_from_version_0_1_is_converted(tmp_path):
    import math
    import shutil

    from sparsernn.data import load_corpus
    from sparsernn.train import Trainer

    shutil.copy(FIXTURE / "last.safetensors", tmp_path / "last.safetensors")
    _, meta = checkpoint.load(tmp_path / "last.safetensors")
    trainer = Trainer.open(tmp_path, load_corpus(FIXTURE / "corpus"))
    assert trainer.complete and trainer.epoch == 2 and [r["epoch"] for r in trainer.history] == [1]
    assert trainer.best_score == pytest.approx(math.exp(meta["resume"]["best_val"]))  # loss -> perplexity
    h, c = trainer.task.carry[1]  # the carried (h, c) of layer 2, as 0.1 left it
    assert h.shape == c.shape == (1, 2, 5)
