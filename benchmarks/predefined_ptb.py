"""Dense vs same-parameter block-sparse AWD-LSTM on PTB, CPU-scaled (Demeester et al. 2018, Table 1).

    python benchmarks/predefined_ptb.py --data-dir ../shared/data/ptb [--seeds 1,2]
    python benchmarks/predefined_ptb.py --report-only

Presets ``awd-lstm-cpu`` (embedding 200, LSTM layers 300/300/200, tied) and ``awd-sparse-cpu`` (the
middle layer 450 wide as 3 parallel LSTMs over input windows of gamma 0.5533, the square-layer match
of ``sparsernn match --dense 300,300 --sparse 450,450 --segments 3``), both with AWD-LSTM's
regularisers and NT-ASGD, 12 epochs of 100k PTB tokens, no finetuning. Each (model, seed) is a unit
appended to results/predefined_ptb.json when it finishes; an interrupted run resumes from its
directory. The paper (full size, 500 epochs): 57.9 +- 0.3 sparse vs 58.8 +- 0.3 dense test perplexity.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, parse_study, ptb_corpus, save_units, stored_or, study_parser, train_run  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.models import RNNLanguageModel, count_parameters  # noqa: E402

NAME = "predefined_ptb"
MODELS = {"dense": "awd-lstm-cpu", "block-sparse": "awd-sparse-cpu"}


def report(result: dict) -> None:
    print(result["scale"])
    print(f"{'model':14s} {'seed':>4s} {'parameters':>11s} {'valid':>8s} {'test':>8s}")
    for u in result["units"].values():
        print(f"{u['model']:14s} {u['seed']:4d} {u['parameters']:11,d} {u['val_ppl']:8.2f} {u['test_ppl']:8.2f}")
    for model in MODELS:
        tests = [u["test_ppl"] for u in result["units"].values() if u["model"] == model]
        if tests:
            spread = f" +- {statistics.stdev(tests):.2f}" if len(tests) > 1 else ""
            print(f"{model}: mean test {statistics.mean(tests):.2f}{spread} over {len(tests)} seed(s)")


def main() -> None:
    parser = study_parser(__doc__, out="runs/predefined_ptb")
    parser.add_argument("--seeds", default="1,2")
    args = parse_study(parser, NAME, report)
    if args is None:
        return
    corpus, corpus_dir = ptb_corpus(args.data_dir, "predefined_ptb.py")
    base = resolve_config(MODELS["dense"])
    result = stored_or(NAME, {
        "command": command_line(),
        "scale": f"presets {', '.join(MODELS.values())}: {base.train.epochs} epochs of {base.data.epoch_tokens} "
                 "PTB tokens, NT-ASGD, no finetuning", "units": {}})
    for seed in (int(s) for s in args.seeds.split(",")):
        for model, preset in MODELS.items():
            key = f"{model}-s{seed}"
            if key in result["units"]:
                continue
            config = resolve_config(preset, overrides={"data.dir": str(corpus_dir.resolve()), "train.seed": seed})
            results, history = train_run(config, corpus, Path(args.out) / key)
            result["units"][key] = {
                "model": model, "seed": seed, "preset": preset, "val_ppl": results["val_ppl"],
                "test_ppl": results["test_ppl"], "curve": [r["val_ppl"] for r in history],
                "parameters": count_parameters(RNNLanguageModel(config.model, len(corpus.vocab)))}
            save_units(NAME, result)
            print(f"{key}: test {results['test_ppl']:.2f}", flush=True)
    report(result)


if __name__ == "__main__":
    main()
