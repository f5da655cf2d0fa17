"""Text from a language model, in PyTorch or from an exported ONNX file (``OnnxModel``): greedy
(temperature 0) or sampled with temperature and top-k, the same text for the same seed."""

from __future__ import annotations

import torch
from torch import nn

from sparsernn.errors import ConfigError


def next_token(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> int:
    """The next token id from the last position's ``logits`` (a vector over the vocabulary)."""
    if temperature == 0:
        return int(logits.argmax())
    scaled = logits.double() / temperature
    if top_k is not None and top_k < scaled.numel():  # exactly k words, ties at the cut-off included or not
        values, indices = torch.topk(scaled, top_k)
        return int(indices[torch.multinomial(torch.softmax(values, dim=-1), 1, generator=generator)])
    return int(torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator))


@torch.inference_mode()
def generate(model: nn.Module, vocab, prompt: str, tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0) -> list[str]:
    """``tokens`` words continuing ``prompt`` (words unknown to the vocabulary read as ``<unk>``)."""
    if not hasattr(model, "init_state"):
        raise ConfigError("generate: the model is not a language model (a tagger labels text, it does not write it)")
    if temperature < 0 or tokens < 1 or (top_k is not None and top_k < 1):
        raise ConfigError("generate: --tokens and --top-k must be >= 1 and --temperature >= 0")
    words = prompt.split() or ["<eos>"]
    unknown = vocab.id("<unk>") if "<unk>" in vocab else 0
    ids = [vocab.id(w) if w in vocab else unknown for w in words]
    # an ONNX Runtime model (deploy.onnx_model) has no parameters and takes CPU tensors
    device = next(iter(model.parameters()), torch.empty(0)).device
    state = model.init_state(1)
    generator = torch.Generator().manual_seed(seed)
    logits, state = model.eval()(torch.tensor(ids, device=device).view(-1, 1), state)
    out: list[str] = []
    for _ in range(tokens):
        token = next_token(logits[-1, 0].cpu(), temperature, top_k, generator)
        out.append(vocab.words[token])
        logits, state = model(torch.tensor([[token]], device=device), state)
    return out
