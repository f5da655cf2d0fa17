"""The tagging task: CoNLL reading, accuracy over real tokens, the tagger end to end through the CLI."""

from __future__ import annotations

import random

import pytest
import torch

from sparsernn.data.conll import load_tagged_corpus, pad_batch, read_conll
from sparsernn.errors import DataError
from sparsernn.tasks.tagging import PAD_TAG, Tagging, accuracy_counts
from sparsernn.train import Trainer

from conftest import cli_in_process, tiny_config

CLASSES = {"DT": ["the", "a", "some"], "NN": [f"noun{i}" for i in range(12)], "VB": [f"verb{i}" for i in range(8)],
           "JJ": [f"adj{i}" for i in range(6)], ".": ["."]}


def write_corpus(directory, seed=0, sentences=(400, 60, 60)):
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in zip(("train", "valid", "test"), sentences):
        lines = []
        for _ in range(count):
            pattern = ["DT", *(["JJ"] * rng.randint(0, 2)), "NN", "VB", "DT", "NN", "."]
            lines += [f"{rng.choice(CLASSES[tag])}\t{tag}" for tag in pattern] + [""]
        (directory / f"{split}.conll").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture(scope="module")
def pos_dir(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("pos"))


def test_the_conll_reader_rejects_a_malformed_line_naming_file_and_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("The\tDT\ncat\tNN\n\nsat NN\n")
    with pytest.raises(DataError, match=r"bad\.conll line 4: expected 'token<TAB>tag', got 'sat NN'") as info:
        read_conll(path)
    assert "\n" not in str(info.value)
    assert read_conll(write_corpus(tmp_path / "ok") / "train.conll")[0][1][0] == "DT"


def test_a_malformed_training_file_is_a_one_line_cli_error(tmp_path):
    directory = write_corpus(tmp_path / "pos", sentences=(5, 2, 2))
    (directory / "valid.conll").write_text("the\tDT\nnoun1\n")
    line = cli_in_process("tag", "train", "--data-dir", directory, "--epochs", "1",
                          "--out", tmp_path / "run").one_line_error()
    assert "valid.conll line 2: expected 'token<TAB>tag'" in line


def test_accuracy_counts_real_tokens_only():
    words, tags, lengths = pad_batch([(torch.tensor([5, 6, 7]), torch.tensor([1, 2, 0])),
                                      (torch.tensor([8]), torch.tensor([2]))], PAD_TAG)
    assert lengths.tolist() == [3, 1] and tags[1:, 1].tolist() == [PAD_TAG, PAD_TAG]
    logits = torch.zeros(3, 2, 3)
    logits[:, :, 0] = 1.0  # predicts tag 0 everywhere, padding included
    assert accuracy_counts(logits, tags) == (1, 4)  # right once in 4 real tokens; padding never counts


def test_a_tagger_learns_and_is_exact_through_the_cli(pos_dir, tmp_path):
    result = cli_in_process("tag", "train", "--data-dir", pos_dir, "--epochs", "6", "--lr", "0.02",
                            "--device", "cpu", "--out", tmp_path / "tagger")
    assert result.returncode == 0, result.stderr
    shown = cli_in_process("tag", "eval", tmp_path / "tagger", "--split", "test", "--split", "train")
    assert shown.returncode == 0 and "accuracy" in shown.stdout and "train" in shown.stdout, shown.stderr
    results = __import__("json").loads((tmp_path / "tagger" / "results.json").read_text())
    assert results["test_accuracy"] > 0.95, results
    text = tmp_path / "text.txt"
    text.write_text("the noun3 verb2 a adj1 noun5 .\nsome noun0 verb7 the noun11 .\n")
    tagged = cli_in_process("tag", "predict", tmp_path / "tagger", text)
    assert tagged.returncode == 0, tagged.stderr
    pairs = [line.split("\t") for line in tagged.stdout.splitlines() if line.strip()]
    assert [t for _, t in pairs[:7]] == ["DT", "NN", "VB", "DT", "JJ", "NN", "."]


def test_train_tokens_caps_the_tagger_to_the_first_sentences_and_train_scores_them(pos_dir):
    corpus = load_tagged_corpus(pos_dir)
    lengths = [len(w) for w, _ in corpus.train]
    cap = sum(lengths[:25]) + 1  # not enough for the 26th sentence
    config = tiny_config(data={"task": "tagging", "batch_size": 10, "train_tokens": cap},
                         model={"hidden_sizes": [8], "embedding_size": 6})
    task = Tagging(config, corpus)
    assert len(task.train) == 25 and task.steps_per_epoch == 3
    assert task.frequencies().sum() == sum(lengths[:25])
    torch.manual_seed(0)
    model = task.build_model(config.model)
    words, tags, lengths25 = pad_batch(task.train, PAD_TAG)
    with torch.inference_mode():
        right, real = accuracy_counts(model(words, lengths25), tags)
    assert task.evaluate(model, "train")["accuracy"] == pytest.approx(right / real)
    seen = {i for step in range(task.steps_per_epoch) for i in task._epoch_order(1)[step * 10:][:10].tolist()}
    assert seen == set(range(25))


def test_sparse_methods_and_a_sparse_embedding_work_on_the_tagger(pos_dir):
    corpus = load_tagged_corpus(pos_dir)
    config = tiny_config(data={"task": "tagging", "batch_size": 10},
                         model={"hidden_sizes": [12], "embedding_size": 8, "projection_size": 6,
                                "embedding_density": 0.5, "weight_drop": 0.2, "embedding_dropout": 0.1},
                         optim={"name": "adam", "lr": 0.02, "clip": None}, train={"epochs": 2},
                         sparsity={"method": "rigl", "density": 0.5, "update_every": 5})
    trainer = Trainer(config, corpus)
    assert isinstance(trainer.task, Tagging)
    result = trainer.fit()
    assert result["val_accuracy"] > 0.6
    masking = trainer.sparsifier.masking
    assert {"layers.0.weight_hh_l0", "layers.0.weight_hh_l0_reverse", "embedding.blocks.0"} <= set(masking.params)
    iss = tiny_config(data={"task": "tagging", "batch_size": 10}, model={"hidden_sizes": [12], "embedding_size": 8},
                      optim={"name": "adam", "lr": 0.02, "clip": None}, train={"epochs": 1},
                      sparsity={"method": "iss", "target_units": [6], "target_epoch": 1})
    grouped = Trainer(iss, corpus)
    grouped.fit()
    assert grouped.sparsifier.kept() == [6]


def test_the_spectrum_of_a_bilstm_tagger_is_that_of_its_forward_direction(pos_dir):
    from sparsernn.dynamics import lyapunov_spectrum
    from sparsernn.models import RNNLanguageModel

    corpus = load_tagged_corpus(pos_dir)
    config = tiny_config(data={"task": "tagging"}, model={"hidden_sizes": [12], "embedding_size": 8})
    torch.manual_seed(0)
    tagger = Tagging(config, corpus).build_model(config.model)
    forward_only = RNNLanguageModel(config.model, len(corpus.words))  # the same cell, one direction
    with torch.no_grad():
        forward_only.embedding.weight.copy_(tagger.embedding.weight)
        for name, value in forward_only.layers[0].named_parameters():
            value.copy_(getattr(tagger.layers[0], name))  # weight_ih_l0 ...: the forward direction's
    sequences = Tagging(config, corpus).lyapunov_inputs(3, 20)
    ours = lyapunov_spectrum(tagger, sequences, k=None, state="hc").to_dict()["exponents"]
    theirs = lyapunov_spectrum(forward_only, sequences, k=None, state="hc").to_dict()["exponents"]
    assert ours == pytest.approx(theirs, abs=1e-9) and len(ours) == 24
    with torch.no_grad():  # the backward direction plays no part
        tagger.layers[0].weight_hh_l0_reverse.mul_(3.0)
    assert lyapunov_spectrum(tagger, sequences, k=None, state="hc").to_dict()["exponents"] == pytest.approx(ours)


def test_unknown_words_are_read_as_their_shape_class_trained_on_training_singletons(tmp_path):
    from sparsernn.data.conll import UNK, unknown_signature, word_id

    assert [unknown_signature(w) for w in ("running", "IBM", "Smith", "1987", "well-known", "quickly", "zq")] == \
        ["<unk-ing>", "<unk-CAPS>", "<unk-Cap>", "<unk-num>", "<unk-hyph>", "<unk-ly>", UNK]
    lines = {"train": "the\tDT\ndog\tNN\nwalking\tVBG\n\nthe\tDT\ndog\tNN\nMax\tNNP\n\nthe\tDT\ndog\tNN\nBarks\tVBZ\n",
             "valid": "the\tDT\ntalking\tVBG\ncat\tNN\n", "test": "Rex\tNN\ndog\tNN\n"}
    for split, text in lines.items():
        (tmp_path / f"{split}.conll").write_text(text)
    corpus = load_tagged_corpus(tmp_path)
    # the classes the training singletons are read as ("Max": <unk-Cap>, "Barks": <unk-Cap-s>), so each is trained
    assert corpus.words == ("<pad>", UNK, "<unk-Cap-s>", "<unk-Cap>", "<unk-ing>", "the", "dog")
    ids = {w: i for i, w in enumerate(corpus.words)}
    assert corpus.train[0][0].tolist() == [5, 6, 4]  # "walking", seen once, trains <unk-ing>
    assert corpus.train[1][0].tolist() == [5, 6, 3] and corpus.train[2][0].tolist() == [5, 6, 2]
    assert corpus.valid[0][0].tolist() == [5, 4, 1]  # unseen "talking" reads as <unk-ing>; "cat" has no class
    assert corpus.test[0][0].tolist() == [3, 6]  # "Rex": <unk-Cap>
    assert word_id("Walks", ids) == 2 and word_id("Opening", ids) == 3  # <unk-Cap-ing> untrained: <unk-Cap>


def test_hyperprune_searches_a_tagger_and_picks_the_winner_by_validation_accuracy(pos_dir, tmp_path):
    import json

    import yaml

    config = tmp_path / "tagger.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"task": "tagging", "batch_size": 10},
        "model": {"cell": "lstm", "hidden_sizes": [12], "embedding_size": 8, "projection_size": 6},
        "optim": {"name": "adam", "lr": 0.02, "clip": None}, "train": {"epochs": 3, "device": "cpu"}}))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"density": 0.5, "choices": {"method": ["set", "static"],
                                                                 "init": ["uniform", "er"]}}))
    result = cli_in_process("hyperprune", "--config", config, "--data-dir", pos_dir, "--space", space,
                            "--sampler", "grid", "--e0", "1", "--survivors", "2", "--k", "4", "--samples", "2",
                            "--steps", "10", "--out", tmp_path / "search")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "search" / "report.json").read_text())
    assert report["metric"] == {"name": "accuracy", "goal": "max"}
    finished = {r["name"]: r["best_val_accuracy"] for r in report["candidates"]
                if r["status"] in ("winner", "survivor")}
    assert len(finished) == 2 and report["winner"] == max(finished, key=finished.get)
    assert 0.5 < finished[report["winner"]] <= 1.0 and 0.5 < report["test"]["test_accuracy"] <= 1.0
    best = [value for _, value in report["time_to_target"]]
    assert best == sorted(best) and best[-1] == max(finished.values())  # the best accuracy found only rises
    assert "val_accuracy_vs_epoch.png" in {p.rsplit("/", 1)[-1] for p in report["plots"]}
    assert "valid accuracy" in result.stdout and "test accuracy" in result.stdout and "ppl" not in result.stdout
