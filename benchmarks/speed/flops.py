"""Floating-point operations of a built Keras model, counted layer by layer.

One multiply-add is 2 FLOPs. Per image, for a layer whose output has P positions
(the spatial cells H_out·W_out of a convolution, 1 for a Dense layer on a vector):

* ``Conv2D`` (any rank, grouped or not): 2·P·k_h·k_w·(C_in/groups)·C_out, which is
  2·P·(the kernel's size), the kernel having shape (k_h, k_w, C_in/groups, C_out);
* ``DepthwiseConv2D``: 2·P·k_h·k_w·C_in·depth_multiplier, again 2·P·(kernel size);
* ``SeparableConv2D``: its depthwise and pointwise kernels, both over the output's P;
* ``Dense``, and any other layer holding a ``kernel`` matrix applied at every position
  (the cosine classifier of cskd_tf/models/heads.py): 2·P·in·out.

Biases, batch norm, activations, pooling, additions and the loss are not counted: on the
convolutional networks this project trains they are a few percent of the total, and they
are memory-bound rather than arithmetic-bound. ``Conv*Transpose`` layers are counted over
their input positions (each input cell is multiplied by the whole kernel).

Training FLOPs per anchor image (:data:`TRAIN_FLOP_FACTOR`) follow the usual convention
(e.g. Kaplan et al. 2020, "Scaling laws for neural language models", section 2.1): a
backward pass costs about twice a forward (gradients with respect to the activations and
to the weights, one product each), so a CE step is ≈ 3 forwards per anchor; CS-KD adds one
forward of the partner image without gradient, ≈ 4 forwards per anchor. Other methods get
no factor (their extra heads, views and teachers differ), so no GFLOP/s.
"""

from __future__ import annotations

import math

# Forward passes' worth of FLOPs per anchor image in one train step (module docstring).
TRAIN_FLOP_FACTOR = {"ce": 3, "cskd": 4}


def forward_flops(model) -> int:
    """FLOPs of one forward pass of one image through ``model``.

    ``model`` is a functional Keras model (a cskd_tf backbone) or a
    :class:`cskd_tf.models.CSKDModel`, whose backbone is counted. Every call of a layer in
    the graph counts, so a layer applied twice is counted twice; nested functional models
    are walked the same way.
    """
    graph = getattr(model, "backbone", model)
    if not hasattr(graph, "_nodes_by_depth"):
        raise ValueError(f"{type(model).__name__} is not a functional Keras model: FLOPs are "
                         "counted over a functional graph's layers and their output shapes")
    return _graph_flops(graph)


def _graph_flops(graph) -> int:
    total = 0
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            layer = node.operation
            if hasattr(layer, "_nodes_by_depth"):  # a nested functional model
                total += _graph_flops(layer)
            elif node.outputs and node.arguments.keras_tensors:  # not an Input
                total += layer_flops(layer, node.arguments.keras_tensors[0].shape,
                                     node.outputs[0].shape)
    return total


def layer_flops(layer, input_shape, output_shape) -> int:
    """FLOPs per image of one call of ``layer`` (module docstring); 0 for layers not
    counted. Shapes include the batch dimension."""
    kernels = [w for name in ("kernel", "depthwise_kernel", "pointwise_kernel")
               if (w := getattr(layer, name, None)) is not None and hasattr(w, "shape")]
    if not kernels:
        return 0
    transpose = "Transpose" in type(layer).__name__
    positions = _positions(layer, input_shape if transpose else output_shape)
    return 2 * positions * sum(math.prod(int(d) for d in w.shape) for w in kernels)


def _positions(layer, shape) -> int:
    """Cells of a (batch, ..., channels) or, for channels_first, (batch, channels, ...)
    shape that one kernel application covers: everything but batch and channels."""
    inner = shape[2:] if getattr(layer, "data_format", None) == "channels_first" else shape[1:-1]
    return math.prod(int(d) for d in inner)


def flop_rates(method: str, forward: int, images_per_s: float, peak_gflops: float = 0.0):
    """{"forward_gflop": ..., "train_flop_factor": ..., "gflop_per_s": ...,
    "peak_fraction": ...} for a train step of ``method`` at ``images_per_s`` anchors/s;
    None where the method has no factor or no peak was given."""
    factor = TRAIN_FLOP_FACTOR.get(method)
    rate = None if factor is None else factor * forward * images_per_s / 1e9
    return {"forward_gflop": forward / 1e9, "train_flop_factor": factor, "gflop_per_s": rate,
            "peak_fraction": rate / peak_gflops if rate is not None and peak_gflops > 0
            else None}
