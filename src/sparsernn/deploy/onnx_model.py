"""An exported ONNX file behind the interface of the model it came from, so that the toolkit's own
evaluation (perplexity, tagging accuracy) and text generation run it in ONNX Runtime unchanged.

A language model: ``forward(tokens, state) -> (logits, state)`` with ``init_state(batch)``, the state
nested per layer as the model nests it (``(h, c)`` for an LSTM layer). A tagger: ``forward(tokens,
lengths=None) -> logits``; padded sentences run in groups of equal length, since the file has no
lengths input and a bidirectional layer must not read the padding.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsernn.deploy.wrap import flatten_state, nest_state
from sparsernn.errors import SparsernnError

STATE_NAME = re.compile(r"state_(\d+)_(\d+)$")


class OnnxModelError(SparsernnError):
    """The file is not an export of this toolkit, or cannot be run."""


def read_sidecar(path: Path) -> dict[str, Any]:
    """``PATH.json``, written beside every export: vocabulary, tags, config."""
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        raise OnnxModelError(f"{path}: no {sidecar.name} beside it (the vocabulary and config `sparsernn export` "
                             "writes); export the run again")
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise OnnxModelError(f"{sidecar}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def open_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path``, with ``threads`` intra-op threads (None: its default)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxModelError('running an ONNX file needs onnxruntime: pip install "sparsernn[deploy]"') from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # not its note that the state inputs have defaults (onnx_state), by design
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types for unreadable files
        raise OnnxModelError(f"{path}: ONNX Runtime cannot load it ({str(exc).strip().splitlines()[0]})") from None


class OnnxModel(nn.Module):
    """``path`` run in ONNX Runtime; ``meta`` is its sidecar (``vocab``, ``kind``, ``config``...)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.meta = read_sidecar(self.path)
        self.session = open_session(self.path, threads)
        # the state inputs have zero defaults, so ONNX Runtime lists them as overridable initializers
        inputs = [*self.session.get_inputs(), *self.session.get_overridable_initializers()]
        self.input_names = [i.name for i in inputs]
        states = sorted(((STATE_NAME.match(i.name), i.shape) for i in inputs[1:]),
                        key=lambda s: (int(s[0].group(1)), int(s[0].group(2))) if s[0] else (-1, -1))
        if any(match is None for match, _ in states):
            raise OnnxModelError(f"{self.path}: inputs {self.input_names} are not those of a sparsernn export")
        self.input_names = [inputs[0].name, *(match.group(0) for match, _ in states)]  # the order _run feeds
        # per layer, the shapes of its state tensors; the symbolic dimension is the batch
        self.layout: list[list[list[int | str]]] = []
        for match, shape in states:
            layer = int(match.group(1))
            while len(self.layout) <= layer:
                self.layout.append([])
            self.layout[layer].append(shape)
        if self.layout:
            self.init_state = self._init_state  # only a model that carries state has one, as in PyTorch

    def _init_state(self, batch_size: int) -> list[Any]:
        def zeros(shape):
            return torch.zeros([d if isinstance(d, int) else batch_size for d in shape])

        return [tuple(zeros(s) for s in parts) if len(parts) > 1 else zeros(parts[0]) for parts in self.layout]

    def _run(self, tokens: torch.Tensor, flat_state: list[torch.Tensor]) -> list[torch.Tensor]:
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(self.input_names, [tokens.long(), *flat_state])}
        return [torch.from_numpy(np.asarray(o)) for o in self.session.run(None, feeds)]

    def forward(self, tokens: torch.Tensor, state_or_lengths: Any = None):
        if not self.layout:
            return self._tag(tokens, state_or_lengths)
        logits, *out = self._run(tokens, flatten_state(state_or_lengths))
        return logits, nest_state(out, [len(parts) for parts in self.layout])

    def _tag(self, tokens: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        steps = tokens.shape[0]
        if lengths is None or bool((lengths == steps).all()):
            return self._run(tokens, [])[0]
        logits = None
        for length in sorted(set(int(n) for n in lengths)):
            columns = (lengths == length).nonzero().squeeze(1)
            part = self._run(tokens[:length, columns], [])[0]
            if logits is None:
                logits = part.new_zeros(steps, tokens.shape[1], part.shape[-1])
            logits[:length, columns] = part
        return logits
