"""Candidates on a Ray cluster: each job ("train this candidate to epoch E, with its spectra") is a
Ray task with its resource request; the driver keeps the LSH rounds.

A task whose worker dies (a killed process, a lost node) is retried by Ray (``retries`` times); the
retry continues the candidate from its last checkpoint (``advance`` is idempotent) and the attempt is
logged in the run directory, so the search shows it. Candidate run directories and the data must be
on a path every node reaches (a shared filesystem): the search's ``--out`` and ``--data-dir``.
Ray is an optional extra: ``pip install 'sparsernn[ray]'``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sparsernn.errors import ConfigError
from sparsernn.search.executor import Executor, Job, LocalExecutor, Progress, _advance_in_worker


class ExecutorSettings(BaseModel):
    """Where candidates train (each field is a ``sparsernn hyperprune`` option). Not part of the search's
    definition: a search started on one executor may be resumed on another."""

    model_config = ConfigDict(extra="forbid")

    executor: Literal["local", "ray"] = Field("local", description="local: this machine (--workers processes); "
                                              "ray: Ray tasks on a cluster")
    address: str | None = Field(None, description="ray: address of a running cluster (e.g. ray://head:10001 or "
                                "auto); none starts a Ray instance on this machine")
    cpus_per_candidate: float = Field(1.0, gt=0.0, description="ray: CPUs each candidate's task asks for (its "
                                      "torch threads)")
    gpus_per_candidate: float = Field(0.0, ge=0.0, description="ray: GPUs (or a fraction of one) each candidate's "
                                      "task asks for")
    retries: int = Field(3, ge=0, description="ray: retries of a task whose worker died")

    @model_validator(mode="after")
    def _ray_options_need_ray(self) -> ExecutorSettings:
        if self.executor == "local" and self.address is not None:
            raise ValueError("address: only for executor ray")
        return self


def _advance_task(job: Job, threads: int) -> Progress:
    return _advance_in_worker(job, threads)


class RayExecutor:
    """Jobs as Ray tasks on the cluster at ``address`` (None: a Ray instance on this machine, or the one
    this process is connected to already)."""

    def __init__(self, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0, retries: int = 3,
                 **init: Any) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("executor ray needs Ray: pip install 'sparsernn[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, logging_level="ERROR", **init)
        self.threads = max(1, int(cpus))
        self.task = ray.remote(_advance_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries,
                                                      retry_exceptions=False)
        self.submitted = 0
        self.dispatch_seconds = 0.0  # driver time spent submitting tasks and collecting their results

    def run(self, jobs: list[Job]) -> list[Progress]:
        started = time.perf_counter()
        refs = [self.task.remote(job, self.threads) for job in jobs]
        self.submitted += len(refs)
        self.dispatch_seconds += time.perf_counter() - started
        results = []
        for job, ref in zip(jobs, refs):
            try:
                results.append(self.ray.get(ref))
            except self.ray.exceptions.RayError as exc:  # retries exhausted, or the cluster went away
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                results.append(Progress(job.name, failed=f"ray: {type(exc).__name__}: {reason}"))
        return results


def make_executor(settings: ExecutorSettings, workers: int = 1) -> Executor:
    """The executor ``settings`` names (``workers``: processes of the local one)."""
    if settings.executor == "ray":
        return RayExecutor(settings.address, settings.cpus_per_candidate, settings.gpus_per_candidate,
                           settings.retries)
    return LocalExecutor(workers)
