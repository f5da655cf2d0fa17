"""sparsernn: sparse, small and fast recurrent sequence models in PyTorch."""

# the one place the version is written: pyproject.toml reads it from here (hatch), checkpoints record it
__version__ = "0.3.0"
