"""Recurrent stack discovery: the ``RecurrentLayer`` description of any module, proven, never guessed.

Every structure-aware part of sparsernn (masks, ISS groups, compaction, counts, spectra) reads a model
through a tuple of ``RecurrentLayer``. The toolkit's own models state theirs (``recurrent_stack()``);
for a user's module it is found here from the module and an example input:

- the recurrent modules are PyTorch's ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (any ``num_layers``, either
  ``batch_first``, with or without bias, bidirectional), each *layer* described on its own, in the
  order the forward pass calls them (forward hooks);
- a layer's receivers are proven by evaluation: a ``nn.Linear`` or recurrent module whose input rows
  (over its feature dimension) are all rows of a recurrent module's output, or of a layer's final
  state, reads that layer's units unchanged (only indexing, reshaping and dropout lie between). Then,
  one forward pass per recurrent module, its outputs are tagged and its receivers' inputs cut from the
  autograd graph: the result of the model must no longer depend on the tagged outputs. Anything that
  still does (a residual, a norm, an activation, a state handed to a decoder) is an other reader of the
  units, which is refused with a one-line ``DiscoveryError`` naming the module;
- a ``nn.Embedding`` whose weight is a receiving Linear's weight (tied) is a receiver too, when its
  output is proven (the same way: called once, rows matched, the rest cut) to be read unchanged by the
  stack's first layer and nothing else, so its dimension k is that layer's input k; else it is left out
  of the receivers and ISS, which needs it, refuses the tie (``sparsity.user_iss``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from sparsernn.errors import DiscoveryError
from sparsernn.models.cells import CELLS
from sparsernn.models.stack import RecurrentLayer

TORCH_RNNS = (nn.LSTM, nn.GRU, nn.RNN)
_STEPPED_CELLS = (nn.LSTMCell, nn.GRUCell, nn.RNNCell)


def torch_cell(module: nn.RNNBase) -> str:
    """The registered cell type that runs a PyTorch RNN module (each cell says which modules it describes)."""
    for cell in CELLS:
        if cell.describes(module):
            return cell.name
    raise DiscoveryError(f"{type(module).__name__}: no registered cell type describes it")


def layer_parameter_names(module: nn.RNNBase, index: int) -> list[str]:
    """The local names of layer ``index``'s parameters (both directions): PyTorch's ``*_l{index}``."""
    suffixes = ("", "_reverse") if module.bidirectional else ("",)
    kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if module.bias else ("weight_ih", "weight_hh")
    return [f"{kind}_l{index}{suffix}" for suffix in suffixes for kind in kinds]


def torch_layers(path: str, module: nn.RNNBase) -> list[RecurrentLayer]:
    """One ``RecurrentLayer`` per layer of a PyTorch RNN module (receivers still to be proven)."""
    directions = 2 if module.bidirectional else 1
    return [RecurrentLayer(module=path, cell=torch_cell(module),
                           input_size=module.input_size if index == 0 else directions * module.hidden_size,
                           hidden_size=module.hidden_size, bidirectional=module.bidirectional,
                           index=index, batch_first=module.batch_first)
            for index in range(module.num_layers)]


def recurrent_modules(model: nn.Module) -> list[tuple[str, nn.RNNBase]]:
    """The PyTorch RNN modules of ``model`` in definition order, refusing what cannot be described:
    a cell stepped in Python (its recurrence is the caller's loop) and an LSTM with ``proj_size``."""
    found = []
    for path, module in model.named_modules():
        if isinstance(module, _STEPPED_CELLS):
            raise DiscoveryError(f"{path or type(model).__name__}: a {type(module).__name__} stepped in Python is "
                                 "not a recurrent layer sparsernn can describe; use nn.LSTM/nn.GRU/nn.RNN")
        if isinstance(module, nn.LSTM) and module.proj_size:
            raise DiscoveryError(f"{path}: nn.LSTM with proj_size is not supported (its h is a projection of its "
                                 "units)")
        if isinstance(module, TORCH_RNNS):
            found.append((path, module))
    return found


def recurrent_weight_names(model: nn.Module) -> list[str]:
    """Qualified names of every recurrent weight matrix (no example input needed): the layers the
    toolkit's own model states, or those of the PyTorch RNN modules of a user's module."""
    if declares_stack(model):
        return [f"{layer.module}.{name}" for layer in discover(model)
                for name in layer.spec.weights(model.get_submodule(layer.module))]
    return [f"{path}.{name}" for path, module in recurrent_modules(model)
            for index in range(module.num_layers) for name in layer_parameter_names(module, index)
            if name.startswith("weight")]


# ---- the pure part: which rows are whose ----------------------------------------------------------


def rows_within(candidate: torch.Tensor, source: torch.Tensor) -> bool:
    """Whether every row of ``candidate (N, W)`` is exactly a row of ``source (M, W)``: a random
    projection sorts the source rows, each candidate row is compared with its neighbours there."""
    if candidate.shape[-1] != source.shape[-1] or source.numel() == 0 or candidate.numel() == 0:
        return False
    probe = torch.randn(source.shape[-1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    keys, order = (source.double() @ probe.to(source.device)).sort()
    found = torch.searchsorted(keys, candidate.double() @ probe.to(source.device))
    matched = torch.zeros(candidate.shape[0], dtype=torch.bool, device=candidate.device)
    for offset in (-1, 0, 1):
        near = order[(found + offset).clamp(0, len(order) - 1)]
        matched |= (source[near] == candidate).all(-1)
    return bool(matched.all())


def layer_outputs(module: nn.RNNBase, output: torch.Tensor, h_n: torch.Tensor) -> dict[int, list[torch.Tensor]]:
    """The rows each layer hands on, ``{layer: [(rows, D*H), ...]}``: every layer's final state (its
    directions side by side) and, for the last layer, its output at every step."""
    directions = 2 if module.bidirectional else 1
    width = directions * module.hidden_size
    finals = h_n.reshape(module.num_layers, directions, -1, module.hidden_size)
    rows = {index: [finals[index].transpose(0, 1).reshape(-1, width)] for index in range(module.num_layers)}
    rows[module.num_layers - 1].append(output.reshape(-1, width))
    return rows


def first_input_sequences(x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """A recurrent module's input as ``(K, T, I)`` sequences (an unbatched ``(T, I)`` is one sequence)."""
    if x.dim() == 2:
        return x.unsqueeze(0)
    return x if batch_first else x.transpose(0, 1)


# ---- the hooks ------------------------------------------------------------------------------------


@dataclass
class _Trace:
    """What one forward pass showed: call order, the rows each layer handed on, the tensors standing
    in for each module's outputs (gradients are taken against them), proven receivers, and the input
    reaching the first layer. With ``only`` set, the pass checks that module: only its rows are
    matched, and the inputs of the receivers reading them are cut from the graph."""

    names: dict[nn.Module, str]
    only: str | None = None
    order: list[str] = field(default_factory=list)
    sources: dict[tuple[str, int], list[torch.Tensor]] = field(default_factory=dict)
    tagged: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    receivers: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    first_input: torch.Tensor | None = None
    embedded: dict[str, int] = field(default_factory=dict)  # tied embedding -> times called

    def match(self, reader: str, x: Any) -> torch.Tensor | None:
        """If ``x``'s rows are a layer's rows, record ``reader`` as its receiver; in a checking pass,
        return ``x`` cut from the graph (so the check sees only the other paths); else None."""
        if not isinstance(x, torch.Tensor) or x.dim() == 0:
            return None
        rows = x.detach().reshape(-1, x.shape[-1])
        hits = [key for key, sources in self.sources.items() if self.only in (None, key[0])
                and any(rows_within(rows, source) for source in sources)]
        for key in hits:
            self.receivers.setdefault(key, []).append(reader)
        return x.detach() if hits and self.only is not None else None

    def before(self, module: nn.Module, args: tuple) -> tuple | None:
        name = self.names[module]
        if isinstance(module, TORCH_RNNS):
            if name in self.order:
                raise DiscoveryError(f"{name}: called more than once in one forward pass (shared weights): not one "
                                     "layer of one stack")
            if isinstance(args[0], PackedSequence):
                raise DiscoveryError(f"{name}: reads a PackedSequence; give discovery an example input without "
                                     "padding (packed sequences are not supported yet)")
            self.order.append(name)
            if self.first_input is None:
                self.first_input = first_input_sequences(args[0].detach(), module.batch_first)
            name = self.names[module] + "[0]"
        cut = self.match(name, args[0]) if args else None
        return None if cut is None else (cut, *args[1:])

    def after(self, module: nn.Module, args: tuple, output: tuple) -> tuple:
        name = self.names[module]
        out, state = output
        states = state if isinstance(state, tuple) else (state,)
        tagged = {label: _tagged(t) for label, t in zip(("output", "h_n", "c_n"), (out, *states))}
        self.tagged[name] = tagged
        for index, rows in layer_outputs(module, tagged["output"].detach(), tagged["h_n"].detach()).items():
            self.sources[(name, index)] = rows
        new_state = (tagged["h_n"], tagged["c_n"]) if isinstance(state, tuple) else tagged["h_n"]
        return tagged["output"], new_state

    def after_embedding(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """A tied embedding's output: a source of rows (its readers are proven like a layer's)."""
        name = self.names[module]
        self.embedded[name] = self.embedded.get(name, 0) + 1
        tagged = _tagged(output)
        self.tagged[name] = {"output": tagged}
        self.sources[(name, 0)] = [tagged.detach().reshape(-1, tagged.shape[-1])]
        return tagged


def _tagged(t: torch.Tensor) -> torch.Tensor:
    """A new tensor object for ``t`` that stays in the graph (a path through the module from the layers
    below it is still seen), made a leaf only where nothing upstream needs a gradient."""
    return t.view_as(t) if t.requires_grad else t.detach().requires_grad_()


@contextmanager
def _hooked(model: nn.Module, trace: _Trace) -> Iterator[None]:
    """Hooks on every recurrent and Linear module, the model in eval mode (dropout off: the proof
    compares values); hooks and train/eval flags restored on exit."""
    modes = {module: module.training for module in model.modules()}
    handles = []
    for module in trace.names:
        if isinstance(module, nn.Embedding):
            handles.append(module.register_forward_hook(trace.after_embedding))
            continue
        handles.append(module.register_forward_pre_hook(trace.before))
        if isinstance(module, TORCH_RNNS):
            handles.append(module.register_forward_hook(trace.after))
    model.eval()
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training


def call(model: nn.Module, inputs: Any) -> Any:
    """``model(inputs)``; a tuple is spread over the positional arguments, a dict over the keywords."""
    if isinstance(inputs, tuple):
        return model(*inputs)
    if isinstance(inputs, dict):
        return model(**inputs)
    return model(inputs)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _unproven_readers(trace: _Trace, result: Any) -> None:
    """Refuse an output of ``trace.only`` that the result still depends on once the inputs of its proven
    receivers are cut. A state returned as it is (an LM's carried hidden state) is handed back, not read."""
    tagged = list(trace.tagged[trace.only].items())
    carried = {id(t) for label, t in tagged if label != "output"}
    outputs = [t for t in _tensors(result) if t.requires_grad and id(t) not in carried and t.is_floating_point()]
    if not outputs:
        return
    total = sum(t.double().sum() for t in outputs)
    grads = torch.autograd.grad(total, [t for _, t in tagged], allow_unused=True)
    for (label, _), grad in zip(tagged, grads):
        if grad is not None:
            what = {"output": "its output", "h_n": "its final state h_n", "c_n": "its final cell state c_n"}[label]
            raise DiscoveryError(f"{trace.only}: {what} reaches the model's result other than through an nn.Linear "
                                 "or a recurrent layer reading it unchanged (a residual, norm, activation or state "
                                 "handed on): cannot prove which units are read")


def _forward(model: nn.Module, example_input: Any, names: dict[nn.Module, str], only: str | None = None) -> _Trace:
    """One hooked forward pass; a checking pass (``only``) refuses that module's unproven readers."""
    trace = _Trace(names, only)
    with _hooked(model, trace), torch.enable_grad():
        result = call(model, example_input)
        if only is not None:
            _unproven_readers(trace, result)
    return trace


def tied_embeddings(model: nn.Module) -> dict[str, nn.Embedding]:
    """The ``nn.Embedding`` modules whose weight is also a ``nn.Linear``'s (tied input and output)."""
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    return {path: m for path, m in model.named_modules() if isinstance(m, nn.Embedding) and id(m.weight) in linear}


def _proven_ties(model: nn.Module, example_input: Any, names: dict[nn.Module, str], trace: _Trace) -> set[str]:
    """The tied embeddings called once whose output only the stack's first layer reads, unchanged."""
    proven = set()
    for path in tied_embeddings(model):
        if trace.embedded.get(path) != 1 or trace.receivers.get((path, 0)) != [f"{trace.order[0]}[0]"]:
            continue
        try:
            _forward(model, example_input, names, only=path)
        except DiscoveryError:
            continue
        proven.add(path)
    return proven


def _with_receivers(model: nn.Module, trace: _Trace, modules: dict[str, nn.RNNBase],
                    proven: set[str]) -> list[RecurrentLayer]:
    """The layers in call order, each with its proven receivers (the next layer of the same module
    first) and the embeddings tied to a receiving Linear whose reader is proven (``_proven_ties``)."""
    ties = {id(m.weight): path for path, m in model.named_modules() if isinstance(m, nn.Embedding) and path in proven}
    layers = []
    for path in trace.order:
        for layer in torch_layers(path, modules[path]):
            found = list(trace.receivers.get((path, layer.index), []))
            if layer.index + 1 < modules[path].num_layers:
                found.insert(0, f"{path}[{layer.index + 1}]")
            elif not found:
                raise DiscoveryError(f"{layer.name}: its output reaches no nn.Linear or recurrent layer unchanged "
                                     "(only indexing, reshaping and dropout may lie between): cannot prove its "
                                     "receivers")
            linear = [model.get_submodule(r) for r in found if "[" not in r]
            tied = [ties[id(m.weight)] for m in linear if id(m.weight) in ties]
            layers.append(replace(layer, receivers=tuple(dict.fromkeys(found + tied))))
    return layers


def trace_stack(model: nn.Module, example_input: Any) -> tuple[tuple[RecurrentLayer, ...], torch.Tensor]:
    """The discovered stack of a user's module and the ``(K, T, I)`` input reaching its first layer."""
    modules = dict(recurrent_modules(model))
    if not modules:
        raise DiscoveryError(f"{type(model).__name__}: no nn.LSTM, nn.GRU or nn.RNN module found")
    names = {m: path for path, m in model.named_modules() if isinstance(m, (*TORCH_RNNS, nn.Linear))}
    names |= {m: path for path, m in tied_embeddings(model).items()}
    trace = _forward(model, example_input, names)
    missing = [path for path in modules if path not in trace.order]
    if missing:
        raise DiscoveryError(f"{missing[0]}: not called by the model on the example input")
    for path in trace.order:  # one pass per module: a cut made for one must not hide another's readers
        _forward(model, example_input, names, only=path)
    proven = _proven_ties(model, example_input, names, trace)
    return tuple(_with_receivers(model, trace, modules, proven)), trace.first_input


def declares_stack(model: nn.Module) -> bool:
    """Whether ``model`` states its own stack (``recurrent_stack()``: the toolkit's models). For their
    ``nn.LSTM``/``nn.GRU``/``nn.RNN`` layers the hooks find the same description (tests/test_one_path.py);
    for cells the hooks cannot see (an RHN, parallel block LSTMs) the declaration is the description."""
    return callable(getattr(model, "recurrent_stack", None))


def discover(model: nn.Module, example_input: Any = None) -> tuple[RecurrentLayer, ...]:
    """The recurrent stack of ``model``, the one entry every consumer (masks, ISS, counts, spectra, plots)
    reads a model through: its own description when it states one (``declares_stack``), else proven
    from ``model(example_input)`` (module docstring); refused in one line when it cannot be."""
    if declares_stack(model):
        return tuple(model.recurrent_stack())
    if example_input is None:
        raise DiscoveryError(f"{type(model).__name__}: discovering its recurrent stack needs an example input")
    return trace_stack(model, example_input)[0]


def chain_check(stack: tuple[RecurrentLayer, ...]) -> None:
    """Refuse a stack that is not one chain (each layer reading the one before): no single system."""
    for below, above in zip(stack, stack[1:]):
        if above.name not in below.receivers:
            raise DiscoveryError(f"{above.name}: does not read {below.name}'s output: the recurrent layers are not "
                                 "one stack")


__all__ = ["chain_check", "declares_stack", "discover", "layer_parameter_names", "recurrent_modules", "recurrent_weight_names",
           "rows_within", "tied_embeddings", "torch_cell", "torch_layers", "trace_stack"]
