"""sparsernn: sparse, small and fast recurrent sequence models in PyTorch.

The public verbs work on any ``nn.Module`` (a user's ``nn.LSTM``/``nn.GRU``/``nn.RNN`` model as much as
the toolkit's own): ``sparsify`` (sparse training with a mask method), ``group_lasso`` and ``compact`` (ISS),
``lyapunov_spectrum`` and
``discover`` (the recurrent stack they read); and to ship one, ``export_model`` (ONNX, checked in ONNX
Runtime), ``export_int8`` and ``quantize_model`` (dynamic int8), ``OnnxModel`` (an exported file run
behind the model's interface) and ``generate`` (text). They are imported on first use, so ``import sparsernn``
(the CLI's start, reading ``__version__``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from sparsernn import settings as _settings

# the one place the version is written: pyproject.toml reads it from here (hatch), checkpoints record it
__version__ = "0.3.0"

_EXPORTS = {
    "sparsify": "sparsernn.sparsity.user",
    "SparseTraining": "sparsernn.sparsity.user",
    "lyapunov_spectrum": "sparsernn.dynamics.lyapunov",
    "Spectrum": "sparsernn.dynamics.lyapunov",
    "discover": "sparsernn.models.discovery",
    "group_lasso": "sparsernn.sparsity.user_iss",
    "UserGroupLasso": "sparsernn.sparsity.user_iss",
    "compact": "sparsernn.sparsity.user_compact",
    "LayerwiseRNN": "sparsernn.sparsity.user_compact",
    "hyperprune": "sparsernn.search.user",
    "HyperpruneResult": "sparsernn.search.user",
    "RecurrentLayer": "sparsernn.models.stack",
    "export_model": "sparsernn.deploy",
    "export_int8": "sparsernn.deploy",
    "quantize_model": "sparsernn.deploy",
    "OnnxModel": "sparsernn.deploy",
    "generate": "sparsernn.deploy",
    "DiscoveryError": "sparsernn.errors",
    "SparsernnError": "sparsernn.errors",
}

__all__ = ["__version__", *_EXPORTS]

# the packages whose import registers the built-in methods, cells and tasks with their settings models:
# imported when a config first asks for one (config.py names none of them)
_settings.provide(sparsity="sparsernn.sparsity", model="sparsernn.models.cells", data="sparsernn.tasks")


def __getattr__(name: str) -> Any:
    """The public verbs, imported when first asked for (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sparsernn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
