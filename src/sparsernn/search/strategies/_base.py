"""What a search strategy is: how a search spends its budget between its start and its final.

Every search starts in phase ``start`` and ends with the same final (``_steps.final``: the candidates
alive then train to the end of the schedule, the best by the task's validation metric wins, its test
metrics are measured once). Between the two, a strategy decides which candidates train how far: LSH
eliminates by rounds, top-K keeps the first ranking's best, full training keeps them all, Hyperband
prunes them one at a time. A strategy is a subclass of ``Strategy`` registered in ``STRATEGIES``
(``sparsernn hyperprune --strategy NAME``); adding one is one file and ``@STRATEGIES.register``.

A strategy gets what it works with, never the ``Search`` that wires them: the candidate store
(trials, state, seeds, the lease), the cost ledger, the executor that trains candidates, the ranking
rule, the settings and a reporter. Everything it decides is saved in the store's state before the
next step, under phase names of its own, so that a killed search resumes where it was.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sparsernn.progress import Reporter
from sparsernn.registry import Registry
from sparsernn.search.executor import Executor
from sparsernn.search.ledger import Ledger
from sparsernn.search.ranking import RankingRule
from sparsernn.search.study import CandidateStore


class Strategy:
    """One way of taking a search from phase ``start`` to phase ``final``."""

    name: ClassVar[str]
    description: ClassVar[str]  # one line, for ``--strategy``'s help
    measures_spectra: ClassVar[bool] = False  # its rankings read LS spectra (when the ranking rule needs them)

    def __init__(self, store: CandidateStore, ledger: Ledger, executor: Executor, ranking: RankingRule,
                 settings: Any, reporter: Reporter) -> None:
        # settings: the search's ``SearchSettings`` (not imported: the settings read this registry)
        self.store, self.ledger, self.executor, self.ranking = store, ledger, executor, ranking
        self.settings, self.reporter = settings, reporter

    def run(self, state: dict[str, Any]) -> None:
        """Continue the search from where ``state`` stands (phase ``start``, or one of this strategy's
        own) until its phase is ``final``, with the candidates to train to the end in ``state["alive"]``;
        save the state after every step (``self.store.save_state``)."""
        raise NotImplementedError


STRATEGIES: Registry[type[Strategy]] = Registry("search strategy")
