"""Learning to recite: does a wider same-parameter sparse RNN memorise more of its training text than a
smaller dense one? (Demeester et al. 2018, Table 4: 99.95% vs 99.33% at 7.07M parameters.)

    python benchmarks/recite.py --data-dir ../shared/data/ptb [--seeds 1,2] [--epochs 60]
    python benchmarks/recite.py --report-only

CPU-scaled: the preset ``recite-cpu`` trains on the first 10k PTB training tokens (as a corpus of their
own, written under ``--out``: its vocabulary is their 2,137 words) with all
regularisation off (no dropout, no weight decay), SGD with momentum 0.9 and the learning rate decayed
by 0.97 per epoch, 80 epochs. Memorisation accuracy is the next-word accuracy by argmax over that same text, read
from the model after the last epoch (``sparsernn eval RUN --split train`` prints it for any run).

Every model is an embedding of 64, a first LSTM layer that varies, and a dense second LSTM layer of
128 that fixes the decoder (2,137 words x 128), so the kinds differ only below it:

  dense            first layer dense 512 (the larger model the others are cut from)
  reduced-dense    first layer dense 256: the parameter budget the next two match
  sparse-rnn       first layer 512 wide as 8 parallel LSTMs over input windows, the window solved so the
                   whole model has reduced-dense's parameter count
  sparse-rnn-emb   the embedding sparse by frequency (density 0.25, frequent words longest), and the
                   parameters it frees spent on a first layer 640 wide as 10 parallel LSTMs, the window
                   again solved for the same total

Each (kind, seed) is a unit appended to results/recite.json when it finishes; an interrupted run
resumes from its directory.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, parse_study, ptb_dir, save_units, stored_or, study_parser, train_run  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.data import load_corpus  # noqa: E402
from sparsernn.models import RNNLanguageModel, count_parameters  # noqa: E402
from sparsernn.runs import LAST, load_model  # noqa: E402
from sparsernn.tasks import build_task  # noqa: E402

NAME = "recite"
PRESET = "recite-cpu"
EMBEDDING = 64
# kind -> (first layer width, its segments, embedding density); segments 1 is a dense layer
KINDS = {"dense": (512, 1, 1.0), "reduced-dense": (256, 1, 1.0), "sparse-rnn": (512, 8, 1.0),
         "sparse-rnn-emb": (640, 10, 0.25)}
BUDGET_KIND = "reduced-dense"


def recite_corpus(ptb_dir: Path, out: Path, tokens: int) -> Path:
    """The text to memorise as a corpus directory: the first PTB training lines holding ``tokens``
    tokens (``<eos>`` counted); valid and test are its last 50 lines (the Trainer wants them; what is
    measured is the training text itself). Its vocabulary is the words of that text."""
    lines, count = [], 0
    for line in (ptb_dir / "ptb.train.txt").read_text(encoding="utf-8").splitlines():
        if count + len(line.split()) + 1 > tokens:
            break
        lines.append(line)
        count += len(line.split()) + 1
    directory = out / "corpus"
    directory.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", lines), ("valid", lines[-50:]), ("test", lines[-50:])):
        path = directory / f"{split}.txt"
        if not path.is_file() or path.read_text(encoding="utf-8") != "\n".join(text) + "\n":
            tmp = path.with_suffix(".tmp")
            tmp.write_text("\n".join(text) + "\n", encoding="utf-8")
            tmp.replace(path)
    return directory


def model_overrides(kind: str, window: int | None = None) -> dict:
    """Config overrides of a kind; ``window`` is the block-sparse first layer's input window."""
    width, segments, density = KINDS[kind]
    overrides = {"model.hidden_sizes": [width, 128], "model.embedding_density": density,
                 "model.embedding_sort": "up"}
    if segments > 1:
        overrides |= {"model.cell": "block_lstm", "model.segments": [segments, 1],
                      "model.gamma": [window / EMBEDDING, 1.0]}
    return overrides


def parameters(overrides: dict, vocab: int) -> int:
    return count_parameters(RNNLanguageModel(resolve_config(PRESET, overrides=overrides).model, vocab))


def matched_overrides(kind: str, vocab: int, budget: int) -> tuple[dict, int]:
    """A kind's overrides with its window solved (bisection: parameters grow with the window) so the
    whole model is closest to ``budget`` parameters; returns them and the model's parameter count."""
    if KINDS[kind][1] == 1:
        overrides = model_overrides(kind)
        return overrides, parameters(overrides, vocab)
    low, high = 1, EMBEDDING
    while low < high:  # the smallest window reaching the budget
        mid = (low + high) // 2
        if parameters(model_overrides(kind, mid), vocab) < budget:
            low = mid + 1
        else:
            high = mid
    counts = {w: parameters(model_overrides(kind, w), vocab) for w in {max(1, low - 1), low}}
    window = min(counts, key=lambda w: abs(counts[w] - budget))
    return model_overrides(kind, window), counts[window]


def report(result: dict) -> None:
    print(result["scale"])
    print(f"{'kind':16s} {'seed':>4s} {'parameters':>11s} {'first layer':>22s} {'train loss':>10s} {'recited':>8s}")
    for u in result["units"].values():
        print(f"{u['kind']:16s} {u['seed']:4d} {u['parameters']:11,d} {u['first_layer']:>22s} "
              f"{u['train_loss']:10.4f} {100 * u['memorisation']:7.2f}%")
    for kind in KINDS:
        values = [u["memorisation"] for u in result["units"].values() if u["kind"] == kind]
        if values:
            spread = f" +- {100 * statistics.stdev(values):.2f}" if len(values) > 1 else ""
            print(f"{kind}: mean {100 * statistics.mean(values):.2f}%{spread} over {len(values)} seed(s)")


def main() -> None:
    parser = study_parser(__doc__, out="runs/recite")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--epochs", type=int, default=None, help="[default: the preset's]")
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parse_study(parser, NAME, report)
    if args is None:
        return
    base = resolve_config(PRESET)
    corpus_dir = recite_corpus(ptb_dir(args.data_dir, "recite.py"), Path(args.out), base.data.train_tokens)
    corpus = load_corpus(corpus_dir)
    vocab = len(corpus.vocab)
    epochs = args.epochs or base.train.epochs
    result = stored_or(NAME, {
        "command": command_line(),
        "scale": f"preset {PRESET}: {epochs} epochs over the first {base.data.train_tokens:,} PTB training tokens, "
                 f"(a corpus of their own, {vocab:,} words), embedding {EMBEDDING}, second layer 128, batch "
                 f"{base.data.batch_size}, SGD momentum 0.9, lr {base.optim.lr} x 0.97/epoch, clip {base.optim.clip}",
        "units": {}})
    budget = parameters(model_overrides(BUDGET_KIND), vocab)
    for seed in (int(s) for s in args.seeds.split(",")):
        for kind in args.kinds.split(","):
            key = f"{kind}-s{seed}"
            if key in result["units"]:
                continue
            overrides, count = matched_overrides(kind, vocab, budget)
            config = resolve_config(PRESET, overrides={**overrides, "data.dir": str(corpus_dir.resolve()),
                                                       "train.seed": seed, "train.epochs": epochs})
            directory = Path(args.out) / key
            results, history = train_run(config, corpus, directory)
            model, *_ = load_model(directory / LAST)  # memorisation is of the final model, not the best-valid one
            recited = build_task(config, corpus).evaluate(model, "train")
            width, segments, density = KINDS[kind]
            window = round(config.model.gamma_of(0) * EMBEDDING)
            result["units"][key] = {
                "kind": kind, "seed": seed, "parameters": count, "budget": budget,
                "first_layer": f"{width}" + (f" ({segments} x window {window})" if segments > 1 else " dense"),
                "embedding_density": density, "epochs": epochs, "train_loss": recited["loss"],
                "memorisation": recited["accuracy"], "val_ppl": results["val_ppl"], "test_ppl": results["test_ppl"],
                "curve_train_loss": [r["train_loss"] for r in history]}
            save_units(NAME, result)
            print(f"{key}: memorised {100 * recited['accuracy']:.2f}% of the training text", flush=True)
    report(result)


if __name__ == "__main__":
    main()
