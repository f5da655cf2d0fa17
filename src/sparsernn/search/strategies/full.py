"""Full training: every initial candidate trains to the end (the baseline LSH saves)."""

from __future__ import annotations

from typing import Any

from sparsernn.search.strategies._base import STRATEGIES, Strategy
from sparsernn.search.strategies._steps import start


@STRATEGIES.register
class Full(Strategy):
    name = "full"
    description = "train all to the end"

    def run(self, state: dict[str, Any]) -> None:
        if state["phase"] == "start":
            start(self, state, "final")
