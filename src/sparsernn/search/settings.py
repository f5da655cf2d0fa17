"""How a search runs: ``SearchSettings`` (each field a ``sparsernn hyperprune`` option).

The strategy, the sampler and the ranking rule are names looked up in their registries
(``STRATEGIES``, ``SAMPLERS``, ``RULES``), so a new one is accepted, and listed in the errors, once it
is registered.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sparsernn.config import RunConfig
from sparsernn.errors import ConfigError
from sparsernn.registry import Registry
from sparsernn.search.executor import LSOptions
from sparsernn.search.ranking import RULES
from sparsernn.search.samplers import SAMPLERS
from sparsernn.search.space import SearchSpace
from sparsernn.search.strategies import STRATEGIES


def _one_of(registry: Registry, name: Any) -> Any:
    """``name`` when ``registry`` holds it, else the error a ``Literal`` of the registered names gives."""
    if isinstance(name, str) and name in registry:
        return name
    quoted = [repr(n) for n in registry.names()]
    expected = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})


class SearchSettings(BaseModel):
    """How a search runs (each field is a ``sparsernn hyperprune`` option)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: `--k true` is not k = 1

    sampler: str = Field("tpe", description="proposes candidates")
    n: int = Field(8, ge=2, description="initial candidates (grid: the whole grid)")
    e0: int = Field(2, ge=1, description="epochs before the first ranking (2: candidates that differ only in how "
                    "their masks change are one model until the first mask update, at the end of epoch 1)")
    ei: int = Field(1, ge=1, description="epochs between rankings")
    survivors: int = Field(2, ge=1, description="candidates trained to the end")
    rank_by: str = Field("ls_band", description="the ranking rule of each round (sparsernn.search.ranking): "
                         "ls_band (the default, the lowest mean regret in benchmarks/lsh_ranking.py: LS distance "
                         "among the candidates within validation's noise band), ls (the paper's: LS distance to "
                         "the dense reference), loss, pareto, rank_sum")
    strategy: str = Field("lsh", description="; ".join(f"{s.name}: {s.description}" for s in STRATEGIES))
    distance: Literal["pca2", "raw"] = Field("pca2", description="LS distance: 2-D PCA space, or raw spectra")
    k: int | None = Field(64, ge=1, description="exponents per spectrum (None: all)")
    state: Literal["hc", "h"] = Field(
        "h", description="LSTM state in the spectrum: h (the default: it predicted final perplexity best in "
        "benchmarks/lsh_predictiveness.py) or (h, c)")
    samples: int = Field(10, ge=1, description="validation windows per spectrum")
    steps: int = Field(100, ge=2, description="steps per window")
    dense_to_end: bool = Field(True, description="train the dense reference to the end too, to report the "
                               "winner's gap to dense (charged to the search)")
    keep_best: bool = Field(True, description="never eliminate the candidate holding the best validation score "
                            "seen so far (the winner is then never worse than a model the search saw); false: the "
                            "ranking rule alone decides, as in the paper")
    seed: int = Field(0, description="seed of the samplers")
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="candidates trained at once (processes, one torch thread each); auto: one per CPU "
        "core, at most n, on a CPU device; 1 on a GPU")

    @field_validator("sampler", mode="before")
    @classmethod
    def _known_sampler(cls, name: Any) -> Any:
        return _one_of(SAMPLERS, name)

    @field_validator("strategy", mode="before")
    @classmethod
    def _known_strategy(cls, name: Any) -> Any:
        return _one_of(STRATEGIES, name)

    @field_validator("rank_by")
    @classmethod
    def _known_rule(cls, name: str) -> str:
        if name not in RULES:
            raise ValueError(f"expected one of {', '.join(RULES.names())}, got {name!r}")
        return name

    @model_validator(mode="after")
    def _two_exponents_for_a_plane(self) -> SearchSettings:
        if self.distance == "pca2" and self.k is not None and self.k < 2:
            raise ValueError(f"k ({self.k}): the pca2 distance places spectra in a plane, it needs at least 2 "
                             "exponents (or --distance raw)")
        return self

    @model_validator(mode="after")
    def _fewer_survivors(self) -> SearchSettings:
        if self.survivors >= self.n and not SAMPLERS[self.sampler].enumerates:
            raise ValueError(f"survivors ({self.survivors}) must be fewer than the initial candidates n ({self.n})")
        return self

    def ls_options(self) -> LSOptions | None:
        """The spectra the candidates' training measures: only when both the strategy's rankings and the
        ranking rule read them."""
        return LSOptions(k=self.k, states=(self.state,), samples=self.samples, steps=self.steps) \
            if RULES[self.rank_by].needs_spectra and STRATEGIES[self.strategy].measures_spectra else None


def check_start(space: SearchSpace, base: RunConfig, settings: SearchSettings) -> None:
    """What a new search is refused for, before it writes anything (no search.db left behind): a
    schedule no longer than e0, a space with nothing to sample."""
    if settings.e0 >= base.train.epochs:
        raise ConfigError(f"e0 ({settings.e0}) must be shorter than the schedule (train.epochs {base.train.epochs})")
    if not SAMPLERS[settings.sampler].enumerates and not space.distributions():
        raise ConfigError(f"search space: nothing to sample for --sampler {settings.sampler} (every value is fixed); "
                          "give choices: or ranges:, or use --sampler grid")


def local_workers(workers: int | str, device: str, n: int, cores: int | None = None) -> int:
    """The processes a local search trains candidates in: ``workers`` when it is a number; for ``auto``,
    one per CPU core (``cores``, default this machine's), at most ``n``, on a CPU device, and one on a
    GPU (candidates there are too small to share it profitably, and each process holds its own CUDA
    context)."""
    if workers != "auto":
        return int(workers)
    if device != "cpu" and (device != "auto" or _cuda_available()):
        return 1
    return max(1, min(cores if cores is not None else available_cores(), n))


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity: a container's or ``taskset``'s share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
