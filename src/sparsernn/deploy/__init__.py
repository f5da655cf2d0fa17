"""Ship a trained model: export to ONNX (verified in ONNX Runtime), and generate text.

``export_model(model, path, ...)`` writes ``.onnx`` only after the file's outputs agree with
PyTorch's at two sequence lengths and two batch sizes; ``generate(model, vocab, prompt, ...)`` continues a
prompt with a language model. ONNX needs the ``deploy`` extra (``pip install "sparsernn[deploy]"``).
"""

from sparsernn.deploy.export import ExportError, export_model
from sparsernn.deploy.generate import generate
from sparsernn.deploy.wrap import DeployableModel, deployable

__all__ = ["DeployableModel", "ExportError", "deployable", "export_model", "generate"]
