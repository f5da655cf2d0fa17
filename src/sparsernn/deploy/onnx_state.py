"""Optional state inputs for an exported ONNX graph: leave them out and a text starts from zeros.

ONNX has no optional graph input, but an input with an initializer of the same name may be left out,
the initializer standing in. An initializer has one shape, and the batch is dynamic, so each state
input gets a zero initializer of batch 1 and is then expanded to the batch the tokens have
(``Expand`` broadcasts a batch of 1 and leaves a given state of the right batch unchanged).
"""

from __future__ import annotations

import numpy as np


def with_default_state(model, state_names: list[str]):
    """``model`` (an ``onnx.ModelProto`` whose first input is ``tokens (sequence, batch)``) with each
    input in ``state_names`` made optional, defaulting to zeros; returns the same object."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inputs = {i.name: i for i in graph.input}
    tokens = graph.input[0].name
    nodes = [helper.make_node("Shape", [tokens], ["sparsernn_tokens_shape"]),
             helper.make_node("Slice", ["sparsernn_tokens_shape", "sparsernn_one", "sparsernn_two"],
                              ["sparsernn_batch"])]
    graph.initializer.extend([numpy_helper.from_array(np.array([1], dtype=np.int64), "sparsernn_one"),
                              numpy_helper.from_array(np.array([2], dtype=np.int64), "sparsernn_two")])
    for name in state_names:
        dims = inputs[name].type.tensor_type.shape.dim
        batch_axis = next(n for n, d in enumerate(dims) if d.dim_param)
        shape = [1 if n == batch_axis else d.dim_value for n, d in enumerate(dims)]
        dtype = helper.tensor_dtype_to_np_dtype(inputs[name].type.tensor_type.elem_type)
        graph.initializer.append(numpy_helper.from_array(np.zeros(shape, dtype=dtype), name))
        before, after = f"{name}_dims_before", f"{name}_dims_after"
        graph.initializer.extend([
            numpy_helper.from_array(np.array(shape[:batch_axis], dtype=np.int64), before),
            numpy_helper.from_array(np.array(shape[batch_axis + 1:], dtype=np.int64), after)])
        expanded = f"{name}_batched"
        nodes += [helper.make_node("Concat", [before, "sparsernn_batch", after], [f"{name}_shape"], axis=0),
                  helper.make_node("Expand", [name, f"{name}_shape"], [expanded])]
        for node in graph.node:  # the graph's own readers of the state now read the batched one
            node.input[:] = [expanded if i == name else i for i in node.input]
    new = list(nodes) + list(graph.node)
    del graph.node[:]
    graph.node.extend(new)
    return model
