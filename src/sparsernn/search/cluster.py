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
from sparsernn.search.executor import Executor, Job, LocalExecutor, Progress, _advance_in_worker, run_test_metrics


class ExecutorSettings(BaseModel):
    """Where candidates train (each field is a ``sparsernn hyperprune`` option). Not part of the search's
    definition: a search started on one executor may be resumed on another."""

    model_config = ConfigDict(extra="forbid")

    executor: Literal["local", "ray"] = Field("local", description="local: this machine (--workers processes); "
                                              "ray: Ray tasks on a cluster")
    address: str | None = Field(None, description="ray: address of a running cluster (e.g. ray://head:10001 or "
                                "auto); none: the cluster started on this machine (ray start), else a new instance")
    cpus_per_candidate: float = Field(1.0, gt=0.0, description="ray: CPUs each candidate's task asks for (its "
                                      "torch threads)")
    gpus_per_candidate: float = Field(0.0, ge=0.0, description="ray: GPUs (or a fraction of one) each candidate's "
                                      "task asks for")
    retries: int = Field(3, ge=0, description="ray: retries of a task whose worker died")

    @model_validator(mode="after")
    def _ray_options_need_ray(self) -> ExecutorSettings:
        given = sorted(self.model_fields_set - {"executor"})
        if self.executor == "local" and given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"{options}: only with --executor ray")
        return self


def _advance_task(job: Job, threads: int) -> Progress:
    return _advance_in_worker(job, threads)


class RayExecutor:
    """Jobs as Ray tasks on the cluster at ``address`` (None: the one this process is connected to, else
    the one ``ray start`` runs on this machine or ``RAY_ADDRESS`` names, else a new instance here)."""

    test_metrics = staticmethod(run_test_metrics)  # the winner's, from its run directory (a shared path)

    def __init__(self, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0, retries: int = 3,
                 **init: Any) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("executor ray needs Ray: pip install 'sparsernn[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, logging_level="ERROR", **init)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"--address {address or '(none)'}: cannot start or reach Ray: {detail}") from None
        self.threads = max(1, int(cpus))
        self.task = ray.remote(_advance_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries,
                                                      retry_exceptions=False)
        # errors that end one candidate (failed); any other Ray error stops the driver instead
        self.candidate_errors = (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError,
                                 ray.exceptions.RayTaskError)
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
            except self.candidate_errors as exc:  # the candidate's own: its workers kept dying, or it ran out
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__  # of memory
                results.append(Progress(job.name, failed=f"ray: {type(exc).__name__}: {reason}"))
            except self.ray.exceptions.RayError as exc:  # the cluster's: stop, so --resume can continue later
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"Ray failed while training {job.name}: {type(exc).__name__}: {reason}; nothing "
                                  "of the round is lost: continue with --resume") from None
        return results


def make_executor(settings: ExecutorSettings, workers: int = 1) -> Executor:
    """The executor ``settings`` names (``workers``: processes of the local one)."""
    if settings.executor == "ray":
        return RayExecutor(settings.address, settings.cpus_per_candidate, settings.gpus_per_candidate,
                           settings.retries)
    return LocalExecutor(workers)
