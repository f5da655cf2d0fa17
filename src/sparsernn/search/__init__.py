"""Hyperpruning: the search over pruning methods and their settings, guided by Lyapunov spectra."""

from sparsernn.search.driver import Search
from sparsernn.search.executor import Executor, Job, LocalExecutor, LSOptions, Progress
from sparsernn.search.settings import SearchSettings
from sparsernn.search.space import SearchSpace, load_space

__all__ = ["Executor", "Job", "LSOptions", "LocalExecutor", "Progress", "Search", "SearchSettings", "SearchSpace",
           "load_space"]
