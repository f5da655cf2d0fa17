"""sparsernn: sparse, small and fast recurrent sequence models in PyTorch."""

__version__ = "0.2.0"
