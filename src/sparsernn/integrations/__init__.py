"""Bridges to other libraries' interfaces (``sparsernn.integrations.optuna``: ``LSPruner``). Each is
imported on its own, so the package does not import those libraries until asked."""
