"""WSJ POS tagging with dense and sparse word embeddings (Demeester et al. 2018, Fig. 3 and Table 3).

    python benchmarks/pos_tagging.py --data-dir ../shared/data/wsj-pos --units default
    python benchmarks/pos_tagging.py --data-dir ../shared/data/wsj-pos --units study --seeds 1   # and --seeds 2
    python benchmarks/pos_tagging.py --report-only

Setup: the standard split without trace tokens (wsj_{train,valid,test}.conll; the paper's files keep
the traces, about +0.25 points). Units, appended to results/pos_tagging.json as they finish:

  default-s1                 the ``pos-tagger`` preset as it ships (embedding 20, BiLSTM 10, tanh 10,
                             Adam 1e-3, batch 20, ``--epochs`` epochs): the acceptance run (>= 95%)
  study (CPU-scaled: a corpus of its own whose training split is the first sentences holding
  ``--study-train-tokens`` tokens, so its vocabulary, unknown-word classes and frequency ranks are those
  of that text; valid and test whole; ``--study-epochs`` epochs, Adam at ``--study-lr``), for each seed
  and embedding density d:
    sparse-{up,none,down,random}-d  embeddings of 20 whose lengths follow frequency (up: frequent words
                             long; none: the vocabulary's order, which here is frequency order already,
                             so random is the unsorted control), d in {0.25, 0.1}; sparse-up-0.5 too
    small-dense-d            dense embeddings of round(20 d) dimensions (the same trainable count),
                             d in {0.5, 0.25, 0.1}
  and dense-1.0 (embedding 20). Seeds may run as separate processes side by side (``--seeds 1`` and
  ``--seeds 2``): each unit is merged into the JSON under a lock.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, parse_study, save_units, stored_or, study_parser, train_run  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.data.conll import load_tagged_corpus  # noqa: E402

NAME = "pos_tagging"


def report(result: dict) -> None:
    print(result["setup"])
    print(f"{'unit':22s} {'seed':>4s} {'epochs':>6s} {'embedding params':>17s} {'valid':>7s} {'test':>7s}")
    for key, u in result["units"].items():
        print(f"{u['unit']:22s} {u['seed']:4d} {u['epochs']:6d} {u['embedding_parameters']:17,d} "
              f"{100 * u['val_accuracy']:6.2f}% {100 * u['test_accuracy']:6.2f}%")
    study = [u for u in result["units"].values() if u["unit"] != "default"]
    names = sorted({u["unit"] for u in study})
    if names:
        print("\nmean test accuracy over seeds:")
        for name in names:
            tests = [u["test_accuracy"] for u in study if u["unit"] == name]
            print(f"  {name:22s} {100 * statistics.mean(tests):6.2f}% ({len(tests)} seeds)")


def slice_corpus(data_dir: Path, out: Path, tokens: int) -> Path:
    """A tagging corpus whose training split is the first sentences of ``data_dir``'s holding ``tokens``
    tokens, and whose valid and test splits are ``data_dir``'s (written once, atomically)."""
    from sparsernn.data.conll import split_file

    directory = out / f"corpus-{tokens}"
    if (directory / "test.conll").is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    kept, count = [], 0
    for block in split_file(data_dir, "train").read_text(encoding="utf-8").split("\n\n"):
        size = len([line for line in block.splitlines() if line.strip()])
        if not size:
            continue
        if count + size > tokens:
            break
        kept.append(block.strip("\n"))
        count += size
    texts = {"train": "\n\n".join(kept) + "\n",
             **{s: split_file(data_dir, s).read_text(encoding="utf-8") for s in ("valid", "test")}}
    for split in ("train", "valid", "test"):  # test last: its presence marks a complete corpus
        tmp = directory / f"{split}.{os.getpid()}.tmp"  # seeds may start side by side
        tmp.write_text(texts[split], encoding="utf-8")
        tmp.replace(directory / f"{split}.conll")
    return directory


def main() -> None:
    parser = study_parser(__doc__, data_dir="../shared/data/wsj-pos", out="runs/pos_tagging")
    parser.add_argument("--units", default="default,study")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--study-epochs", type=int, default=8)
    parser.add_argument("--study-train-tokens", type=int, default=250_000)
    parser.add_argument("--study-lr", type=float, default=0.005)
    parser.add_argument("--seeds", default="1,2")
    args = parse_study(parser, NAME, report)
    if args is None:
        return
    corpus = load_tagged_corpus(args.data_dir) if "default" in args.units.split(",") else None
    result = stored_or(NAME, {
        "command": command_line(),
        "setup": "WSJ POS, standard split without trace tokens (train 00-18, valid 19-21, test 22-24)",
        "units": {}})

    def run(key: str, unit: str, seed: int, epochs: int, model: dict, scaled: dict | None = None,
            data: Path = Path(args.data_dir), train_tokens: int | None = None) -> None:
        if key in result["units"]:
            return
        overrides = {"data.dir": str(data.resolve()), "train.seed": seed, "train.epochs": epochs,
                     **{f"model.{k}": v for k, v in model.items()}, **(scaled or {})}
        config = resolve_config("pos-tagger", overrides=overrides)
        directory = Path(args.out) / key
        results, _ = train_run(config, corpus if data == Path(args.data_dir) else load_tagged_corpus(data), directory)
        from sparsernn.runs import load_model

        trained, *_ = load_model(directory / "best.safetensors")
        result["units"][key] = {
            "unit": unit, "seed": seed, "epochs": epochs, "model": model, "scaled": scaled or {}, "train_tokens": train_tokens,
            "val_accuracy": results["val_accuracy"],
            "test_accuracy": results["test_accuracy"],
            "embedding_parameters": sum(p.numel() for p in trained.embedding.parameters())}
        save_units(NAME, result)
        print(f"{key}: test {100 * results['test_accuracy']:.2f}%", flush=True)

    units = args.units.split(",")
    if "default" in units:
        run("default-s1", "default", 1, args.epochs, {})
    if "study" in units:
        scaled = {"optim.lr": args.study_lr}
        sliced = slice_corpus(Path(args.data_dir), Path(args.out), args.study_train_tokens)
        for seed in (int(s) for s in args.seeds.split(",")):
            def study(key: str, unit: str, model: dict) -> None:
                run(f"{key}-s{seed}", unit, seed, args.study_epochs, model, scaled, sliced, args.study_train_tokens)

            study("dense-1.0", "dense-1.0", {})
            for density in (0.5, 0.25, 0.1):
                sorts = ("up",) if density == 0.5 else ("up", "none", "down", "random")
                for sort in sorts:
                    study(f"sparse-{sort}-{density}", f"sparse-{sort}-{density}",
                          {"embedding_density": density, "embedding_sort": sort})
                study(f"small-dense-{density}", f"small-dense-{density}", {"embedding_size": max(1, round(20 * density))})
    report(result)


if __name__ == "__main__":
    main()
