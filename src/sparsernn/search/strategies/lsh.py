"""LSH: elimination by rounds (the hyperpruning paper's search).

``n`` candidates train ``e0`` epochs, with a spectrum after every epoch when the ranking rule reads LS
distances; each round ranks the candidates (``--rank-by``: by their distance to the dense reference in
LS space, by validation loss, ...), eliminates the farther half and inserts ``a // 4`` new candidates
(``a``: the round's count) proposed by the sampler from the archive of (configuration, score); the
inserted ones are brought up to the survivors' epoch, and all train ``ei`` more epochs. The ranking
after which no more than ``survivors`` would remain (halving plus insertions), or the schedule's last,
decides them instead: the nearest ``survivors`` go to the final.
"""

from __future__ import annotations

import json
from typing import Any

from sparsernn.search.executor import Progress
from sparsernn.search.ls_space import ls_distances
from sparsernn.search.ranking import Evidence, decide
from sparsernn.search.report import best_seen, candidate_rows, leaderboard
from sparsernn.search.samplers import SAMPLERS, propose
from sparsernn.search.strategies._base import STRATEGIES, Strategy
from sparsernn.search.strategies._steps import start, train
from sparsernn.search.study import seed_for


@STRATEGIES.register
class Rounds(Strategy):
    name = "lsh"
    description = "eliminate by rounds"
    measures_spectra = True
    first_ranking_decides = False  # top-K: the first ranking keeps the survivors

    def run(self, state: dict[str, Any]) -> None:
        if state["phase"] == "start":
            start(self, state, "rounds")
        while state["phase"] == "rounds":
            self.round(state)

    def round(self, state: dict[str, Any]) -> None:
        """One ranking: eliminate, insert, or (the ranking that decides) keep the survivors for the final."""
        settings, store, round_, epoch = self.settings, self.store, state["round"], state["epoch"]
        store.drop_failed(state)
        alive = list(state["alive"])
        self.reporter.message(f"round {round_}: {len(alive)} candidates to epoch {epoch}")
        results = train(self, alive, epoch, f"round {round_}", state, reference=self.ranking.needs_spectra)
        alive = state["alive"]
        if self.still_one_model(results, alive, epoch, state):
            return
        scores = self.scores(results, alive, epoch, round_, state)
        rows = candidate_rows(store)
        self.reporter.message(leaderboard(rows, settings.sampler, settings.rank_by, store.metric.name, scores))
        count = len(alive) // 4 if not SAMPLERS[settings.sampler].enumerates else 0  # insertions
        # the ranking that would leave no more than ``survivors`` decides them (another round would only
        # rank them again), as do the schedule's last ranking and top-K's first
        seen = best_seen(rows, store.metric)
        decision = decide(sorted(alive, key=lambda n: (scores[n], n)), settings.survivors, count,
                          epoch + settings.ei >= store.base.train.epochs, self.first_ranking_decides,
                          protect=seen["name"] if settings.keep_best and seen else None)
        kept, eliminated = decision.kept, decision.eliminated
        for name in eliminated:
            self.eliminate(name, epoch, scores[name])
        if decision.final:
            state["alive"], state["phase"] = kept, "final"
            store.save_state(state)
            return
        inserted = self.insert(count, round_, state) if count else []
        self.reporter.message(f"round {round_}: kept {', '.join(kept)}; eliminated {', '.join(eliminated)}"
                              + (f"; inserted {', '.join(inserted)}" if inserted else ""))
        state.update(alive=kept + inserted, round=round_ + 1, epoch=epoch + settings.ei)
        store.save_state(state)

    def still_one_model(self, results: dict[str, Progress], alive: list[str], epoch: int,
                        state: dict[str, Any]) -> bool:
        """Candidates whose validation losses are all identical are still one model (one seed, one initial
        mask, before any mask update has acted): a ranking would be a tie broken by name, so it waits
        ``ei`` epochs, unless this is the schedule's last chance to rank."""
        losses = {results[name].val_loss[epoch] for name in alive}
        if len(alive) < 2 or len(losses) > 1 or epoch + 2 * self.settings.ei >= self.store.base.train.epochs:
            return False
        self.reporter.message(f"round {state['round']}: the {len(alive)} candidates are still one model at epoch "
                              f"{epoch} (identical validation loss); the ranking waits until epoch "
                              f"{epoch + self.settings.ei}")
        state["epoch"] = epoch + self.settings.ei
        self.store.save_state(state)
        return True

    def scores(self, results: dict[str, Progress], names: list[str], epoch: int, round_: int,
               state: dict[str, Any]) -> dict[str, float]:
        """The ranking rule's scores of ``names`` at ``epoch`` (lower ranks first), each candidate's
        evidence (LS distance, validation loss) stored with it."""
        settings, store = self.settings, self.store
        with self.ledger.overhead(state):
            losses = {name: results[name].val_loss[epoch] for name in names}
            distances = None
            if self.ranking.needs_spectra:
                spectra = {name: results[name].spectra[settings.state] for name in names}
                distances, points = ls_distances(results["reference"].spectra[settings.state], spectra, epoch,
                                                 settings.distance, settings.k)
                (store.out / "ls_space").mkdir(exist_ok=True)
                (store.out / "ls_space" / f"round-{round_}.json").write_text(json.dumps(points))
            scores = self.ranking.score(Evidence(losses, distances))
            trials = store.candidates()
            for name, score in scores.items():
                attrs = trials[name].user_attrs
                for key, value in (("scores", score), ("val_losses", losses[name]),
                                   *((("distances", distances[name]),) if distances is not None else ())):
                    history = dict(attrs.get(key, {}))
                    history[str(epoch)] = value
                    store.set(name, key, history)
        return scores

    def insert(self, count: int, round_: int, state: dict[str, Any]) -> list[str]:
        """``count`` new candidates the sampler proposes from the archive of (configuration, last score)."""
        settings, store = self.settings, self.store
        with self.ledger.overhead(state):
            trials = store.candidates()
            archive = [(t.user_attrs["params"], t.user_attrs["scores"][max(t.user_attrs["scores"], key=int)])
                       for t in trials.values() if t.user_attrs.get("scores")]
            taken = [t.user_attrs["params"] for t in trials.values()]
            points = propose(settings.sampler, store.space, archive, count, seed_for(settings.seed, round_ + 1),
                             taken)
            return store.add(points, round_ + 1)

    def eliminate(self, name: str, epoch: int, score: float) -> None:
        """A candidate out of the search, with when and by which rule (the report says it)."""
        self.store.set(name, "eliminated", {"epoch": epoch, "rule": self.settings.rank_by})
        self.store.finish(name, "eliminated", score)
