"""Models and the recurrent-stack description they expose."""

from sparsernn.models.lm import RNNLanguageModel, count_parameters, detach_state
from sparsernn.models.stack import GATES, RecurrentLayer
from sparsernn.models.tagger import SequenceTagger

__all__ = ["GATES", "RNNLanguageModel", "RecurrentLayer", "SequenceTagger", "count_parameters", "detach_state"]
