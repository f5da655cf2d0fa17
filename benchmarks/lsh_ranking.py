"""Which ranking rule should a search use: every rule replayed on the same fully trained candidates.

    python benchmarks/lsh_ranking.py [--data-dir DIR] [--spaces paper,mixed,gru] [--seeds 1,2] [--points 12]
    python benchmarks/lsh_ranking.py --report-only    # replay the stored runs again, no training

The committed study is scaled to 2 CPU cores: the demo's 2x64 LSTM (GRU for ``gru``), 4 epochs of 50k
tokens (lr halved from epoch 2), 8 configurations per space, seeds 1 and 2, one process per seed:

    python benchmarks/lsh_ranking.py --data-dir ../shared/data/ptb --points 8 --epochs 4 \
        --epoch-tokens 50000 --decay-start-epoch 2 --seeds 1

For each search space and seed, ``--points`` configurations of the space (the grid's, or sampled at
random for a space with ranges; a seeded subset when there are more) and the dense reference are
trained to the end of the schedule once, with the validation loss and the Lyapunov spectrum (h
state, k = 64, as the search measures them) after every epoch. Then every ranking rule of
``sparsernn.search.ranking`` is replayed on those runs as a search would use it (first ranking at
``--e0`` = 2, then every epoch,
rounds that keep the better half, ``--survivors`` decided by the ranking that reaches them; no
insertions, so every rule sees the same candidates), plus the top-K baseline of "Is One Epoch All
You Need?" (arXiv 2307.15422: rank once by validation loss after a short training, keep the top K),
here after e0 epochs: after one, every candidate of these spaces is still the same model (one seed,
one initial mask; the first mask update comes at the end of epoch 1), so any rule would be a tie.
Per rule and per round: Spearman's rho of the scores with the final validation perplexity (the
best over the schedule) with its bootstrap interval, whether the best configuration is still kept,
and the regret (the best final perplexity among the survivors minus the best of all).

Spaces: ``paper`` (configs/search/paper.yaml: Selfish-RNN's modes, death rate fixed), ``mixed``
(configs/search/demo.yaml: methods x inits x death rates), ``gru`` (the mixed space on a GRU).
Units (space, seed) are stored in results/lsh_ranking.json as each finishes; a unit there is
skipped, and an interrupted one resumes from its candidates' run directories.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse_study, ptb_dir, save_units, spearman_with_interval, stored_or, study_parser  # noqa: E402

NAME = "lsh_ranking"
SPACES = {"paper": ("paper", {}), "mixed": ("demo", {}), "gru": ("demo", {"model.cell": "gru"})}
STATE, K = "h", 64


def configurations(space_name: str, points: int, seed: int) -> list[dict]:
    from sparsernn.search import load_space
    from sparsernn.search.samplers import propose

    space = load_space(SPACES[space_name][0])
    if not space.ranges:
        grid = space.grid()
        return grid if len(grid) <= points else random.Random(seed).sample(grid, points)
    return propose("random", space, [], points, seed)


def train_unit(space_name: str, seed: int, args, corpus_dir: Path) -> dict:
    """Every configuration of the unit and the dense reference to the end, with spectra every epoch."""
    from sparsernn.config import resolve_config, validate
    from sparsernn.search import load_space
    from sparsernn.search.executor import Job, LSOptions, advance
    from sparsernn.sparsity import resolve_method

    preset_space, overrides = SPACES[space_name]
    space = load_space(preset_space)
    schedule = {field: value for field, value in (("train.epochs", args.epochs), ("data.epoch_tokens", args.epoch_tokens),
                                                  ("optim.decay_start_epoch", args.decay_start_epoch)) if value}
    base = resolve_config(args.preset, None, {**overrides, **schedule, "data.dir": str(corpus_dir), "train.seed": seed,
                                              "train.device": "cpu", "sparsity.prunable": args.prunable.split(",")})
    ls = LSOptions(k=K, states=(STATE,), samples=10, steps=100)
    root = Path(args.out) / f"{space_name}-s{seed}"
    dense = validate({**base.to_dict(), "sparsity": {"method": "dense"}}, "dense reference")
    jobs = [("reference", resolve_method(dense))]
    jobs += [(f"c{i:02d}", space.candidate_config(base, params))
             for i, params in enumerate(configurations(space_name, args.points, seed))]
    runs = {}
    for name, config in jobs:
        print(f"== {space_name} seed {seed}: {name} ==", flush=True)
        progress = advance(Job(name, config.to_dict(), str(root / name), base.train.epochs, ls))
        if progress.failed:
            runs[name] = {"failed": progress.failed}
            continue
        runs[name] = {"config": config.sparsity.model_dump(mode="json"),
                      "val_loss": {str(e): v for e, v in progress.val_loss.items()},
                      "val_ppl": {str(e): v for e, v in progress.val_metric.items()},
                      "spectra": {str(e): v for e, v in progress.spectra[STATE].items()}}
    return {"space": space_name, "seed": seed, "preset": args.preset, "schedule": schedule,
            "prunable": base.sparsity.prunable, "density": space.density, "cell": base.model.cell,
            "epochs": base.train.epochs, "runs": runs}


def replay(unit: dict, rule_name: str, survivors: int, e0: int, top_k: bool = False) -> list[dict]:
    """The rounds a search ranking by ``rule_name`` takes on the unit's runs (no insertions): per
    round, the epoch, Spearman's rho of the scores with the final perplexities, whether the best is kept."""
    from sparsernn.search.ls_space import ls_distances
    from sparsernn.search.ranking import RULES, Evidence, decide

    rule = RULES[rule_name]
    runs = {n: r for n, r in unit["runs"].items() if n != "reference" and "failed" not in r}
    final = {n: min(r["val_ppl"].values()) for n, r in runs.items()}
    best = min(final.values())
    reference = {int(e): v for e, v in unit["runs"]["reference"]["spectra"].items()}
    alive, rounds, epoch = sorted(runs), [], e0
    while True:
        loss = {n: runs[n]["val_loss"][str(epoch)] for n in alive}
        distance = None
        if rule.needs_spectra:
            spectra = {n: {int(e): v for e, v in runs[n]["spectra"].items() if int(e) <= epoch} for n in alive}
            distance, _ = ls_distances(reference, spectra, epoch, "pca2", K)
        scores = rule.score(Evidence(loss, distance))
        order = sorted(alive, key=lambda n: (scores[n], n))
        decision = decide(order, survivors, 0, epoch + 1 >= unit["epochs"], top_k)
        rho, low, high = spearman_with_interval([scores[n] for n in alive], [final[n] for n in alive]) \
            if len(alive) > 3 else (float("nan"),) * 3
        kept_best = min(final[n] for n in decision.kept)
        rounds.append({"epoch": epoch, "ranked": len(alive), "spearman": rho, "interval": [low, high],
                       "best_kept": kept_best == best, "regret": kept_best - best if decision.final else None})
        if decision.final:
            return rounds
        alive, epoch = decision.kept, epoch + 1


def rules_summary(units: dict, survivors: int, e0: int) -> dict:
    from sparsernn.search.ranking import RULES

    rules = {name: {} for name in RULES.names()}
    rules["top-k"] = {}
    for key, unit in units.items():
        for name in RULES.names():
            rules[name][key] = replay(unit, name, survivors, e0)
        rules["top-k"][key] = replay(unit, "loss", survivors, e0, top_k=True)
    return rules


def report(result: dict) -> None:
    units, survivors, e0 = result["units"], result["survivors"], result.get("e0", 1)
    rules = rules_summary(units, survivors, e0)
    print(f"survivors {survivors}, first ranking at epoch {e0}; units: {', '.join(units)}")
    print(f"{'rule':16s} {'mean regret':>11s} {'best kept':>9s}  first round's Spearman per unit")
    means = {}
    for name, per_unit in rules.items():
        regrets = [rounds[-1]["regret"] for rounds in per_unit.values()]
        means[name] = sum(regrets) / len(regrets)
        kept = sum(rounds[-1]["best_kept"] for rounds in per_unit.values())
        firsts = ", ".join(f"{k}: {r[0]['spearman']:+.2f} [{r[0]['interval'][0]:+.2f}, {r[0]['interval'][1]:+.2f}]"
                           for k, r in per_unit.items())
        print(f"{name:16s} {means[name]:11.2f} {kept:5d}/{len(per_unit):<3d}  {firsts}")
    lowest = min(means.values())
    print(f"lowest mean regret ({lowest:.2f}): {', '.join(n for n, m in means.items() if m == lowest)}")
    for name, per_unit in rules.items():  # every round: epoch, candidates ranked, Spearman, best kept
        for key, rounds in per_unit.items():
            print(f"  {name:16s} {key:10s} " + " | ".join(
                f"e{r['epoch']} n{r['ranked']} {r['spearman']:+.2f}{'' if r['best_kept'] else ' lost best'}"
                for r in rounds))


def main() -> None:
    parser = study_parser(__doc__, out="runs/lsh_ranking")
    parser.add_argument("--spaces", default=",".join(SPACES))
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--points", type=int, default=12, help="configurations per space (a seeded subset)")
    parser.add_argument("--survivors", type=int, default=2)
    parser.add_argument("--e0", type=int, default=2,
                        help="epoch of the first ranking (at epoch 1, candidates that differ only in how their masks "
                             "change are still one model: the mask update comes at the end of the epoch)")
    parser.add_argument("--preset", default="hyperprune-demo")
    parser.add_argument("--prunable", default="recurrent")
    parser.add_argument("--epochs", type=int, default=None, help="the preset's schedule, shortened (a scaled study)")
    parser.add_argument("--epoch-tokens", type=int, default=None)
    parser.add_argument("--decay-start-epoch", type=int, default=None)
    args = parse_study(parser, NAME, report)
    if args is None:
        return
    import torch

    torch.set_num_threads(1)
    corpus_dir = ptb_dir(args.data_dir, "lsh_ranking.py")
    result = stored_or(NAME, {"units": {}})
    result["survivors"], result["e0"] = args.survivors, args.e0
    for space_name in args.spaces.split(","):
        for seed in map(int, args.seeds.split(",")):
            key = f"{space_name}/s{seed}"
            if key not in result["units"]:
                result["units"][key] = train_unit(space_name, seed, args, corpus_dir)
                result["rules"] = rules_summary(result["units"], args.survivors, args.e0)  # every unit so far
                save_units(NAME, result)
    report(result)


if __name__ == "__main__":
    main()
