from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from sparsernn.data import batchify, bptt_window
from sparsernn.models import RNNLanguageModel
from sparsernn.runs import BEST, LAST, METRICS, load_model
from sparsernn.tasks.lm import evaluate
from sparsernn.train import Trainer

from conftest import tiny_config, train_until_interrupted


def test_uniform_logits_score_perplexity_equal_to_vocabulary_size(synthetic_corpus):
    config = tiny_config()
    torch.manual_seed(0)
    model = RNNLanguageModel(config.model, len(synthetic_corpus.vocab))
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
    loss = evaluate(model, batchify(synthetic_corpus.valid, 4), bptt=10)
    assert math.exp(loss) == pytest.approx(len(synthetic_corpus.vocab), rel=1e-6)  # float32 log-softmax


def test_next_word_accuracy_counts_argmax_hits_and_train_means_the_text_it_trains_on(synthetic_corpus):
    from sparsernn.tasks.lm import LanguageModelling, evaluate_counts

    config = tiny_config(data={"train_tokens": 300})
    torch.manual_seed(0)
    model = RNNLanguageModel(config.model, len(synthetic_corpus.vocab))
    task = LanguageModelling(config, synthetic_corpus)
    batched = task.split_data("train")
    assert batched.numel() == 300 // config.data.eval_batch_size * config.data.eval_batch_size
    assert torch.equal(batched.t().reshape(-1), synthetic_corpus.train[: batched.numel()])
    hits = tokens = 0
    with torch.inference_mode():  # the whole stream at once: the same state carried window to window
        logits, _ = model(batched[:-1], model.init_state(batched.size(1)))
        hits, tokens = int((logits.argmax(-1) == batched[1:]).sum()), batched[1:].numel()
    loss, accuracy = evaluate_counts(model, batched, config.data.bptt)
    assert accuracy == pytest.approx(hits / tokens, abs=1e-12) and 0 < hits < tokens
    metrics = task.evaluate(model, "train")
    assert metrics["accuracy"] == accuracy and metrics["loss"] == pytest.approx(loss)


def test_loss_falls_on_a_small_synthetic_corpus(synthetic_corpus):
    trainer = Trainer(tiny_config(train={"epochs": 3}), synthetic_corpus)
    before = trainer.evaluate_split("valid")["ppl"]
    result = trainer.fit(test=True)
    val = [r["val_ppl"] for r in trainer.history]
    train = [r["train_ppl"] for r in trainer.history]
    assert before > 0.8 * len(synthetic_corpus.vocab)
    assert val[0] < before / 3 and val[-1] < val[0] and train[-1] < train[0]
    assert result["test_ppl"] < 0.2 * len(synthetic_corpus.vocab)


def test_mean_loss_with_scaled_lr_and_clip_equals_the_papers_summed_loss(synthetic_corpus):
    """Zaremba's lr and clip are for the loss summed over BPTT steps: ours (mean) * bptt == theirs."""
    bptt, paper_lr, paper_clip = 10, 1.0, 0.05  # a clip small enough to be active
    config = tiny_config(optim={"lr": paper_lr * bptt, "clip": paper_clip / bptt}, data={"bptt": bptt})
    trainer = Trainer(config, synthetic_corpus)
    reference = copy.deepcopy(trainer.model)
    inputs, targets = bptt_window(trainer.task.train_data, 0, bptt)
    # the paper's step: loss summed over time, averaged over the batch; SGD lr 1, clip 5-style
    logits, _ = reference(inputs, reference.init_state(inputs.size(1)))
    per_token = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    loss = per_token.view(bptt, -1).sum(0).mean()
    loss.backward()
    norm = nn.utils.clip_grad_norm_(reference.parameters(), paper_clip)
    assert norm > paper_clip  # clipping really happened
    with torch.no_grad():
        for p in reference.parameters():
            p -= paper_lr * p.grad
    trainer.train_step(1, 0)
    for ours, theirs in zip(trainer.model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_capped_epochs_take_successive_slices_of_the_training_stream(synthetic_corpus):
    config = tiny_config(data={"epoch_tokens": 3 * 8 * 10})
    trainer = Trainer(config, synthetic_corpus)
    assert trainer.steps_per_epoch == 3
    task = trainer.task
    total = task.total_windows
    assert [task.window_index(1, s) for s in range(3)] == [0, 1, 2]
    assert [task.window_index(2, s) for s in range(3)] == [3, 4, 5]
    epoch = total // 3 + 1
    assert [task.window_index(epoch, s) for s in range(3)] == [(3 * (epoch - 1) + s) % total for s in range(3)]


def test_checkpoint_round_trip_reproduces_identical_validation_loss(synthetic_corpus, tmp_path):
    config = tiny_config(train={"epochs": 1}, model={"hidden_sizes": [24, 24], "tie_weights": True})
    trainer = Trainer(config, synthetic_corpus, tmp_path)
    trainer.fit(test=True)
    expected = trainer.evaluate_split("valid")["loss"]  # one epoch: the best model is the model
    model, loaded_config, vocab, meta = load_model(tmp_path / BEST)
    assert loaded_config == config and vocab == synthetic_corpus.vocab
    assert model.decoder.weight is model.embedding.weight  # tying survives the round trip
    again = evaluate(model, batchify(synthetic_corpus.valid, config.data.eval_batch_size), config.data.bptt)
    assert again == expected
    lines = [json.loads(l) for l in (tmp_path / METRICS).read_text().splitlines()]
    assert [l.get("epoch") for l in lines[:-1]] == [1] and lines[-1]["event"] == "final"
    assert lines[-1]["val_loss"] == expected
    assert math.isclose(lines[-1]["test_ppl"], json.loads((tmp_path / "results.json").read_text())["test_ppl"])


def test_resume_in_process_continues_identically(synthetic_corpus, tmp_path):
    """Saving mid-epoch and continuing in a fresh Trainer gives the same weights as never stopping."""
    config = tiny_config(data={"epoch_tokens": 8 * 10 * 12}, train={"epochs": 2, "checkpoint_every": 5},
                         model={"dropout": 0.3})
    straight = Trainer(config, synthetic_corpus, tmp_path / "a")
    straight.fit()

    train_until_interrupted(config, synthetic_corpus, tmp_path / "b")
    resumed = Trainer(config, synthetic_corpus, tmp_path / "b")
    resumed.load_resume(tmp_path / "b" / LAST)
    assert (resumed.epoch, resumed.step_in_epoch) == (1, 5)
    resumed.fit()
    assert resumed.history[-1]["val_loss"] == straight.history[-1]["val_loss"]
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)
