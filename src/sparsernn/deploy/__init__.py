"""Ship a trained model: export to ONNX (verified in ONNX Runtime), quantize to int8, and generate text.

``export_model(model, path, ...)`` writes ``.onnx`` only after the file's outputs agree with PyTorch's
at two sequence lengths and two batch sizes; ``export_int8`` then quantizes the file, and
``quantize_model`` does the same for PyTorch eager. ``OnnxModel(path)`` runs an exported file behind the
model's own interface (evaluation, generation); ``generate(model, vocab, prompt, ...)`` continues a
prompt. ONNX needs the ``deploy`` extra (``pip install "sparsernn[deploy]"``).
"""

from sparsernn.deploy.export import ExportError, export_model
from sparsernn.deploy.generate import generate
from sparsernn.deploy.onnx_model import OnnxModel, OnnxModelError
from sparsernn.deploy.quantize import (QuantizeError, export_int8, quantizable_modules, quantize_model, quantize_onnx,
                                       weight_bytes)
from sparsernn.deploy.wrap import DeployableModel, deployable

__all__ = ["DeployableModel", "ExportError", "OnnxModel", "OnnxModelError", "QuantizeError", "deployable",
           "export_int8", "export_model", "generate", "quantizable_modules", "quantize_model", "quantize_onnx",
           "weight_bytes"]
