"""Models, the registry of cell types they are built from, and the recurrent-stack description."""

from sparsernn.models.cells import CELLS, Cell
from sparsernn.models.lm import RNNLanguageModel, count_parameters, detach_state
from sparsernn.models.stack import RecurrentLayer, multiply_adds
from sparsernn.models.tagger import SequenceTagger

__all__ = ["CELLS", "Cell", "RNNLanguageModel", "RecurrentLayer", "SequenceTagger", "count_parameters",
           "detach_state", "multiply_adds"]
