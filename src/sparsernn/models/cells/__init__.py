"""The registry of recurrent cell types; importing this package registers the built-in ones."""

from sparsernn.models.cells import gru, lstm, rnn  # noqa: F401  (each registers itself)
from sparsernn.models.cells.base import CELLS, Cell, CellJacobian, CellParams, LayerState, UnitSlice

__all__ = ["CELLS", "Cell", "CellJacobian", "CellParams", "LayerState", "UnitSlice"]
