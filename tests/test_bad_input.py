"""Regressions of the fuzzed command-line surface: each input ends in one ``error:`` line with its exit
code (2 bad input, 1 work that cannot be done), no traceback, nothing written over what was read."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import optuna
import pytest

from sparsernn.runs import BEST
from sparsernn.train import Trainer

from conftest import cli_in_process, tiny_config


@pytest.fixture(scope="module")
def run(synthetic_corpus, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run")
    config = tiny_config(train={"epochs": 1}, data={"epoch_tokens": 8 * 10 * 5, "dir": str(synthetic_corpus.directory)})
    Trainer(config, synthetic_corpus, path).fit()
    return path


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def one_line(*args, code: int = 2) -> str:
    return cli_in_process(*args).one_line_error(code)


@pytest.mark.parametrize("storage, code, message", [
    ("postgresql://nobody:secret@127.0.0.1:1/x", 1, "--storage postgresql://nobody:***@127.0.0.1:1/x: cannot open"),
    ("sqlite:////nonexistent-dir/x.db", 2, "directory /nonexistent-dir does not exist"),
    ("notaurl", 2, "not a database URL"),
    ("sqlite://:secret@/x", 2, "not a database URL"),
    ("foo://user@host/db", 2, "unknown database kind 'foo' (expected sqlite or postgresql)"),
])
def test_bad_storages_are_one_line(synthetic_dir, tmp_path, storage, code, message):
    line = one_line("hyperprune", "--out", tmp_path / "s", "--storage", storage, "--data-dir", synthetic_dir,
                    code=code)
    assert message in line and "secret" not in line
    assert "+psycopg" not in line  # the URL as the user wrote it, not the driver it is opened with
    assert not (tmp_path / "s").exists()  # nothing made for a search that could not start


@pytest.mark.parametrize("content, message", [
    (b"", "empty, not a search database"),
    (b"\x00garbage" * 300, "not a search database (not a SQLite file)"),
])
def test_a_resume_on_an_empty_or_garbage_database_is_refused_untouched(tmp_path, content, message):
    (tmp_path / "search.db").write_bytes(content)
    assert message in one_line("hyperprune", "--resume", tmp_path)
    assert (tmp_path / "search.db").read_bytes() == content


def test_a_resume_on_a_truncated_database_or_one_without_a_search_is_one_line(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    optuna.create_study(study_name="hyperprune", storage=f"sqlite:///{full / 'search.db'}")
    before = (full / "search.db").read_bytes()
    assert "never completed its start" in one_line("hyperprune", "--resume", full)
    assert (full / "search.db").read_bytes() == before
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "search.db").write_bytes(before[: len(before) // 2])
    assert "not a usable search database" in one_line("hyperprune", "--resume", torn)


def test_a_search_directory_must_be_a_new_or_search_directory(run, synthetic_dir, tmp_path):
    before = digest(run)
    assert "holds a training run" in one_line("hyperprune", "--out", run, "--data-dir", synthetic_dir)
    assert "a file, not a directory" in one_line("hyperprune", "--out", run / BEST, "--data-dir", synthetic_dir)
    assert f"{run / BEST} is a file" in one_line("hyperprune", "--out", run / BEST / "x", "--data-dir", synthetic_dir)
    assert digest(run) == before


@pytest.mark.parametrize("space, message", [
    ("density: 0.3\nchoices: {method: [set, rigl]}\nranges: {death_rate: {low: 0.4, high: .inf}}\n",
     "ranges.sparsity.death_rate.high: Input should be a finite number"),
    ("density: 0.3\nchoices: {method: [set, rigl]}\nranges: {death_rate: {low: 0.4, high: 0.9, integer: true}}\n",
     "an integer range needs integer bounds"),
    ("density: 0.3\nfixed: {method: static}\nchoices: {death: [magnitude, set]}\n",
     "choices.sparsity.death: not read by static"),
    ("density: 0.3\ndensity: 0.4\nchoices: {method: [set, rigl]}\n", "line 2: key 'density' is written twice"),
])
def test_search_spaces_that_would_search_something_else_are_refused(synthetic_dir, tmp_path, space, message):
    (tmp_path / "space.yaml").write_text(space)
    line = one_line("hyperprune", "--space", tmp_path / "space.yaml", "--out", tmp_path / "s", "--data-dir",
                    synthetic_dir)
    assert message in line and not (tmp_path / "s").exists()


@pytest.mark.parametrize("args, message", [
    (["--method", "iss", "--lasso-lambda=-1"], "--lasso-lambda '-1': sparsity.lasso_lambda: must be >= 0"),
    (["--method", "iss", "--lasso-lambda", "0.1,-2"], "must be >= 0"),
    (["--set", "train.epochs=abc", "--epochs", "1"], "--set train.epochs=abc: train.epochs: Input should be"),
    (["--hidden", "1000000000"], "does not fit in memory"),
    # said before allocating: these weights would allocate (then swap) rather than fail at once
    (["--hidden", "600000"], "does not fit in memory on cpu (10,729.3 GiB of weights, about 4x that to train;"),
])
def test_train_options_are_each_checked(synthetic_dir, tmp_path, args, message):
    line = one_line("train", "--data-dir", synthetic_dir, "--epochs", "1", "--out", tmp_path / "r", *args,
                    code=1 if "memory" in message else 2)
    assert message in line


@pytest.mark.parametrize("text, message", [
    ("train:\n  epochs: [1, 2]\n", "cfg.yaml: train.epochs: Input should be a valid integer"),
    ("train:\n  epochs: 1\n  epochs: 2\n", "cfg.yaml line 3: key 'epochs' is written twice (first on line 2)"),
])
def test_a_config_file_layer_is_checked_even_where_an_option_replaces_it(synthetic_dir, tmp_path, text, message):
    (tmp_path / "cfg.yaml").write_text(text)
    line = one_line("train", "-c", tmp_path / "cfg.yaml", "--data-dir", synthetic_dir, "--epochs", "1",
                    "--out", tmp_path / "r")
    assert message in line and not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", [["eval"], ["lyapunov"], ["iss", "tau"], ["tag", "eval"]])
def test_an_unknown_device_is_one_line(run, command):
    assert one_line(*command, run, "--device", "nope") == \
        "error: --device: expected auto, cpu, cuda or cuda:N, got 'nope'"


def test_iss_plot_skips_a_torn_last_metrics_line_and_names_a_corrupt_one(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    metrics = (copy / "metrics.jsonl").read_text()
    (copy / "metrics.jsonl").write_text(metrics + '{"epoch": 2, "iss_no')  # a kill mid-append
    assert cli_in_process("iss", "plot", copy).returncode == 0
    (copy / "metrics.jsonl").write_text(metrics + "xx\n" + metrics)
    assert one_line("iss", "plot", copy).endswith("metrics.jsonl line 3: not a metrics record (a JSON object)")
    (copy / "metrics.jsonl").write_bytes(b"\x00\xff\n")
    assert "cannot be read as UTF-8 text" in one_line("iss", "plot", copy)


def test_no_command_writes_over_its_own_input(run, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("a b\n")
    before = digest(run)
    cases = [(["lyapunov", run, "-o", run / BEST], "would overwrite the input"),
             (["lyapunov", run, "--plot", run / "config.yaml"], "would overwrite the input"),
             (["compact", run, "-o", run / BEST], "would overwrite the input"),
             (["compact", run / BEST, "-o", run / "best.json"], "would overwrite the input"),
             (["tag", "predict", run, text, "-o", text], "would overwrite the input"),
             (["tag", "predict", run, text, "-o", run / "last.safetensors"], "would overwrite the input")]
    for args, message in cases:
        assert message in one_line(*args), args
    assert digest(run) == before and text.read_text() == "a b\n"


def test_a_grid_lists_each_candidate_once_whatever_settings_its_method_ignores():
    from sparsernn.search.samplers import propose
    from sparsernn.search.space import SearchSpace, point_key

    space = SearchSpace.model_validate({"density": 0.5, "choices": {"method": ["static", "set"],
                                                                    "death": ["magnitude", "set"]}})
    # static does not read death: its two points would train one candidate twice, listed as two
    assert space.grid() == [{"sparsity.method": "static"},
                            {"sparsity.method": "set", "sparsity.death": "magnitude"},
                            {"sparsity.method": "set", "sparsity.death": "set"}]
    proposed = propose("random", space, [], 3, seed=0)  # a sampler too, while the space leaves room
    assert len({point_key(space.effective(p)) for p in proposed}) == 3


def test_an_output_into_the_run_of_an_input_checkpoint_is_refused(run, tmp_path):
    (tmp_path / "link").symlink_to(run / "last.safetensors")
    before = digest(run)
    cases = [(["compact", run / BEST, "-o", run / "last.safetensors"], "(last.safetensors of its run)"),
             (["lyapunov", run / BEST, "-o", run / "metrics.jsonl"], "(metrics.jsonl of its run)"),
             (["lyapunov", run / BEST, "--plot", run / "config.yaml"], "(config.yaml of its run)"),
             (["compact", run / BEST, "-o", tmp_path / "link"], "(last.safetensors of its run)")]
    for args, message in cases:
        assert message in one_line(*args), args
    assert digest(run) == before


def test_iss_plot_on_corrupt_metrics_writes_no_plot(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "metrics.jsonl").write_text("garbage\n" + (run / "metrics.jsonl").read_text())
    assert one_line("iss", "plot", copy).endswith("metrics.jsonl line 1: not a metrics record (a JSON object)")
    assert not (copy / "plots").exists()  # refused before the first plot, not after two


def test_a_huge_workers_count_starts_no_more_processes_than_there_are_jobs(monkeypatch):
    from concurrent.futures import Future

    from sparsernn.search.executor import LocalExecutor

    class Pool:  # stands in for the process pool: runs nothing, records its size
        def submit(self, work, job):
            done = Future()
            done.set_result(job)
            return done

        def shutdown(self, **_):
            pass

    sizes = []
    monkeypatch.setattr(LocalExecutor, "_new_pool", staticmethod(lambda workers: sizes.append(workers) or Pool()))
    executor = LocalExecutor(99999999999)  # `--workers 99999999999` overflowed a C int making the pool
    assert executor.run(["a", "b"]) == ["a", "b"] and sizes == [2]
    assert executor.run(["c", "d", "e"]) == ["c", "d", "e"] and executor.run(["f", "g"]) == ["f", "g"]
    assert sizes == [2, 3]  # grown for a larger batch, kept for a smaller one
    executor.close()


def test_an_evaluation_batch_larger_than_a_split_is_refused_before_training(synthetic_dir, tmp_path):
    line = one_line("train", "--data-dir", synthetic_dir, "--hidden", "8", "--epochs", "1", "--epoch-tokens", "80",
                    "--device", "cpu", "--eval-batch-size", "99999999999", "--out", tmp_path / "r")
    assert "too few for 99999999999 evaluation streams (data.eval_batch_size)" in line  # one line, said first
    assert not any((tmp_path / "r").iterdir())  # nothing trained, nothing written


@pytest.fixture(scope="module")
def tagger(tmp_path_factory) -> Path:
    """A tiny trained tagger (its spectra's inputs repeat the validation text: any length can be asked)."""
    root = tmp_path_factory.mktemp("tagger")
    for split, count in (("train", 30), ("valid", 6), ("test", 6)):
        (root / f"{split}.conll").write_text("".join("the\tDT\ncat\tNN\nsat\tVB\n.\t.\n\n" for _ in range(count)))
    result = cli_in_process("tag", "train", "--data-dir", root, "--epochs", "1", "--hidden", "8", "--device", "cpu",
                            "--out", root / "run")
    assert result.returncode == 0, result.stderr
    return root / "run"


@pytest.mark.parametrize("samples, steps", [("99999999999", "5"), ("1", "99999999999")])
def test_spectra_larger_than_memory_are_one_line_naming_the_options(tagger, samples, steps):
    line = one_line("lyapunov", tagger, "--samples", samples, "--steps", steps, "--device", "cpu", code=1)
    assert line.startswith(f"error: --samples {samples}, --steps {steps}: needs more memory than there is")


@pytest.mark.parametrize("field", ["train:\n  init_from", "data:\n  dir"])
def test_a_nul_character_in_a_config_path_is_refused_where_it_is_written(tmp_path, field):
    (tmp_path / "cfg.yaml").write_text(f'{field}: "a\\0b"\n')  # YAML's escape: reachable from any config file
    line = one_line("train", "-c", tmp_path / "cfg.yaml", "--print-config")
    assert line.endswith("contains a NUL character, which no name or path can: 'a\\x00b'")


def test_a_search_refused_at_its_start_writes_nothing(synthetic_dir, tmp_path):
    common = ("hyperprune", "--data-dir", synthetic_dir, "--n", "2", "--survivors", "1", "--epochs", "2")
    assert "e0 (2) must be shorter than the schedule" in one_line(*common, "--e0", "2", "--out", tmp_path / "a")
    # spectra the validation data cannot give were found only once the first candidates had trained
    line = one_line(*common, "--samples", "99999999999", "--steps", "2", "--out", tmp_path / "b")
    assert "--samples 99999999999, --steps 2: " in line and "cannot give 99999999999 sequences" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # no search.db of a search never begun
