"""The registry of recurrent cell types. Every module of this package is imported here and registers
its cell, so adding a cell type is adding one file."""

import importlib
import pkgutil

from sparsernn.models.cells.base import CELLS, Cell, CellJacobian, CellParams, LayerState, UnitSlice

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["CELLS", "Cell", "CellJacobian", "CellParams", "LayerState", "UnitSlice"]
