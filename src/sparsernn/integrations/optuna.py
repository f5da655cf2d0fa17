"""``LSPruner``: the hyperpruning paper's Lyapunov-spectrum rule as an Optuna pruner, for a plain
``optuna.create_study(pruner=LSPruner(...))`` study and the user's own objective.

**The contract.** In the objective, after each step (epoch) of training::

    trial.report(val_loss, step)               # as with any Optuna pruner
    pruner.observe(trial, step, model, inputs) # the model's Lyapunov spectrum at this step
    if trial.should_prune():
        raise optuna.TrialPruned()

``observe`` computes the spectrum of the model's recurrent stack driven by ``inputs`` (what
``model(inputs)`` takes; ``sparsernn.lyapunov_spectrum``) and stores it in the trial's user
attributes (``ls:<step>``), so every process sharing the study's storage sees it; a spectrum computed
elsewhere (a list of exponents, a tensor or a ``Spectrum``) may be given instead of the model. The
dense reference's spectra come from ``LSPruner(reference={step: spectrum})`` or from
``pruner.observe_reference(study, step, model, inputs)`` (stored in the study's user attributes,
``ls_reference:<step>``): train the dense model on the same schedule first.

**The rule.** A step is a rung when the reference has a spectrum there (and ``step >= min_step``).
At a rung, the trials that reached it (their spectrum and reported value at that step: running,
complete and pruned ones alike) are ranked by ``rule`` (a ``sparsernn.search.ranking`` rule:
``ls``, the distance to the reference in the PCA LS space of every spectrum up to the step, by
default; ``ls_band``, ``pareto``, ``rank_sum`` also read the reported values as losses, lower
better); the first ``ceil(n / reduction_factor)`` continue and the trial is pruned if it is not among
them (ties by trial number): successive halving, rung by rung, as the search's rounds halve. A trial
without a spectrum at the step, or a step that is not a rung, is never pruned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from sparsernn.search.executor import LSOptions
from sparsernn.search.ls_space import DISTANCES, ls_distances
from sparsernn.search.ranking import RULES, Evidence

ATTR = "ls:"  # a trial's spectrum at a step: user attribute "ls:<step>"
REFERENCE_ATTR = "ls_reference:"  # the reference's at a step, in the study's user attributes
Exponents = list[float | None]  # -inf stored as None, as the search stores spectra


def as_exponents(spectrum: Any) -> Exponents:
    """A spectrum given as a ``Spectrum``, a tensor or a sequence, as stored (JSON: -inf is None)."""
    values = spectrum.exponents if hasattr(spectrum, "exponents") else spectrum
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    return [float(x) if x is not None and math.isfinite(float(x)) else None for x in values]


class LSPruner(BasePruner):
    """Prunes the trials whose dynamics are farthest from a dense reference's (see the module docstring).

    ``reference``: the dense reference's spectrum per step (else from ``observe_reference``); ``k``,
    ``state``: the spectrum ``observe`` measures (first ``k`` exponents, LSTM state ``"h"`` or
    ``"hc"``); ``distance``: ``pca2`` (the paper's LS space) or ``raw``; ``rule``: the ranking rule;
    ``reduction_factor``: ``ceil(n / reduction_factor)`` of the ``n`` trials at a rung continue;
    ``min_step``: no rung before it."""

    def __init__(self, reference: Mapping[int, Any] | None = None, *, k: int | None = 64, state: str = "h",
                 distance: str = "pca2", rule: str = "ls", reduction_factor: int = 2, min_step: int = 1) -> None:
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES.names())}, got {rule!r}")
        if not RULES[rule].needs_spectra:
            raise ValueError(f"rule {rule!r} reads no spectra: use Optuna's own pruners for it")
        if reduction_factor < 2:
            raise ValueError(f"reduction_factor must be at least 2, got {reduction_factor}")
        self.reference = {int(step): as_exponents(s) for step, s in (reference or {}).items()}
        self.options = LSOptions(k=k, states=(state,))
        self.k, self.state, self.distance, self.rule = k, state, distance, RULES[rule]
        self.reduction_factor, self.min_step = reduction_factor, min_step

    # ---- what the objective hands over ---------------------------------------------------------

    def spectrum(self, model_or_spectrum: Any, inputs: Any = None, step: int = 0) -> Exponents:
        """The spectrum of a model (measured on ``inputs``) or a spectrum given as it is."""
        from torch import nn

        if isinstance(model_or_spectrum, nn.Module):
            from sparsernn.search.objective import spectrum_of

            return spectrum_of(model_or_spectrum, inputs, self.options, self.state, step)
        return as_exponents(model_or_spectrum)

    def observe(self, trial: optuna.Trial, step: int, model: Any, inputs: Any = None) -> Exponents:
        """Store ``model``'s spectrum (or a given one) at ``step`` with ``trial``; returns it."""
        exponents = self.spectrum(model, inputs, step)
        trial.set_user_attr(f"{ATTR}{int(step)}", exponents)
        return exponents

    def observe_reference(self, study: optuna.Study, step: int, model: Any, inputs: Any = None) -> Exponents:
        """Store the dense reference's spectrum at ``step`` with ``study`` (every process then reads it)."""
        exponents = self.spectrum(model, inputs, step)
        study.set_user_attr(f"{REFERENCE_ATTR}{int(step)}", exponents)
        return exponents

    # ---- the decision -------------------------------------------------------------------------

    def references(self, study: optuna.Study) -> dict[int, Exponents]:
        """The reference's spectra by step: those given to the pruner, else those stored with the study."""
        stored = {int(key.removeprefix(REFERENCE_ATTR)): value for key, value in study.user_attrs.items()
                  if key.startswith(REFERENCE_ATTR)}
        return {**stored, **self.reference}

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.min_step:
            return False
        reference = self.references(study)
        if step not in reference or f"{ATTR}{step}" not in trial.user_attrs:
            return False
        rivals = self._rivals(study, trial, step)
        names = {f"t{t.number}": t for t in rivals}
        spectra = {name: spectra_of(t) for name, t in names.items()}
        distances, _ = ls_distances({s: v for s, v in reference.items() if s <= step}, spectra, step, self.distance,
                                    self.k)
        losses = {name: float(t.intermediate_values[step]) for name, t in names.items()}
        direction = study.directions[0] if len(study.directions) == 1 else optuna.study.StudyDirection.MINIMIZE
        if direction == optuna.study.StudyDirection.MAXIMIZE:
            losses = {name: -value for name, value in losses.items()}  # the rules rank lower first
        scores = self.rule.score(Evidence(losses, distances))
        order = sorted(names, key=lambda name: (scores[name], names[name].number))
        kept = order[:math.ceil(len(order) / self.reduction_factor)]
        return f"t{trial.number}" not in kept

    def _rivals(self, study: optuna.Study, trial: FrozenTrial, step: int) -> list[FrozenTrial]:
        """The trials that reached ``step``: its spectrum and a reported value there (``trial`` included)."""
        states = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
        others = [t for t in study.get_trials(deepcopy=False, states=states) if t.number != trial.number]
        return [t for t in [trial, *others] if f"{ATTR}{step}" in t.user_attrs and step in t.intermediate_values
                and math.isfinite(t.intermediate_values[step])]


def spectra_of(trial: FrozenTrial) -> dict[int, Sequence[float | None]]:
    """A trial's stored spectra by step."""
    return {int(key.removeprefix(ATTR)): value for key, value in trial.user_attrs.items() if key.startswith(ATTR)}


__all__ = ["LSPruner", "as_exponents", "spectra_of"]
