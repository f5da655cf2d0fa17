"""examples/gru_classifier.py at its --small size: compaction keeps the accuracy and drops parameters."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_gru_classifier_small() -> None:
    path = Path(__file__).parents[1] / "examples" / "gru_classifier.py"
    spec = importlib.util.spec_from_file_location("gru_classifier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(small=True)
    assert result["accuracy_after"] == result["accuracy_before"]
    assert result["parameters_after"] < result["parameters_before"]
