"""Any Keras classifier seen as the ``{"logits", "features"}`` backbone CSKDModel trains.

Every method calls ``model.forward(x) -> {"logits": (B, C), "features": (B, D)}``. The
backbones of :mod:`cskd_tf.models` return that dict already. Any other functional or
Sequential Keras model whose output is the logits tensor gets a functional *view* built
once over its own layers (no copy: the same layers and weights):

    logits   = model(x)
    features = the input of the model's last Dense layer      (default)
             = the output of the layer named ``feature_layer`` (when given)

so for ``keras.Sequential([..., GlobalAveragePooling2D(), Dense(C)])`` or a
keras.applications base with ``pooling="avg"`` under a Dense head the features are the
pooled vector, the penultimate representation the paper's Recall@k uses (Yun et al.,
CVPR 2020, Table 4).

Bad input raises :class:`~cskd_tf.errors.ModelError` with a one-line fix: a model without
a graph (subclassed, or a Sequential without ``keras.Input``), more than one output,
an output of probabilities (softmax, sigmoid) instead of logits, a single logit, no Dense
layer and no ``feature_layer``, an unknown ``feature_layer``, or features that are not
(batch, dim).
"""

from __future__ import annotations

import keras

from cskd_tf.errors import ModelError

CONTRACT_KEYS = ("logits", "features")


def _graph_output(model):
    """The model's symbolic output, or ModelError when it has no graph to read."""
    for attribute in ("output", "outputs"):  # a Sequential has only `outputs`
        try:
            output = getattr(model, attribute)
        except (AttributeError, ValueError):
            continue
        if isinstance(output, (list, tuple)) and len(output) == 1:
            output = output[0]
        if output is not None:
            return output
    raise ModelError(
        f"model {model.name!r} has no graph CSKDModel can read (a subclassed model, or a "
        "Sequential without an input shape); build it on keras.Input(shape=...) as a "
        "functional or Sequential model, or return {'logits', 'features'} from its call")


def returns_contract(model) -> bool:
    """Whether ``model`` returns the ``{"logits", "features"}`` dict itself."""
    output = _graph_output(model)
    if isinstance(output, dict):
        missing = [k for k in CONTRACT_KEYS if k not in output]
        if missing:
            raise ModelError(f"model {model.name!r} returns a dict without {missing}; return "
                             "the logits tensor, or a dict with 'logits' and 'features'")
        return True
    return False


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history else None


def _probability_activation(layer):
    """"softmax" or "sigmoid" when ``layer`` outputs probabilities, else None."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", "")
    return name if name in ("softmax", "sigmoid") else None


def _feature_tensor(model, feature_layer):
    if feature_layer:
        try:
            layer = model.get_layer(feature_layer)
        except ValueError:
            raise ModelError(f"feature_layer={feature_layer!r} is not a layer of model "
                             f"{model.name!r}; name one of its layers (model.summary() "
                             "lists them)") from None
        return layer.output, f"the output of layer {feature_layer!r}"
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ModelError(f"model {model.name!r} has no Dense layer to take the penultimate "
                         "features from; pass feature_layer='<name of the layer whose output "
                         "is the feature vector>'")
    return dense[-1].input, f"the input of its last Dense layer {dense[-1].name!r}"


def classifier_view(model, feature_layer=None) -> keras.Model:
    """A functional model over ``model``'s layers returning ``{"logits", "features"}``."""
    outputs = model.outputs if isinstance(model.outputs, (list, tuple)) else [model.outputs]
    if len(outputs) != 1:
        raise ModelError(f"model {model.name!r} has {len(outputs)} outputs; CSKDModel needs "
                         "one output, the logits (batch, classes)")
    logits = outputs[0]
    if len(logits.shape) != 2:
        raise ModelError(f"model {model.name!r} outputs shape {tuple(logits.shape)}; "
                         "CSKDModel needs logits of shape (batch, classes)")
    activation = _probability_activation(_producer(logits))
    if activation:
        raise ModelError(f"model {model.name!r} outputs probabilities ({activation}); CS-KD "
                         "needs logits: build the head without activation (keras.applications: "
                         "classifier_activation=None)")
    if logits.shape[-1] is not None and logits.shape[-1] < 2:
        raise ModelError(f"model {model.name!r} outputs {logits.shape[-1]} logit; CS-KD needs "
                         "one logit per class and at least 2 classes: end with Dense(C), C >= 2")
    features, where = _feature_tensor(model, feature_layer)
    if len(features.shape) != 2:
        raise ModelError(f"the features of model {model.name!r} ({where}) have shape "
                         f"{tuple(features.shape)}, not (batch, dim); pass "
                         "feature_layer='<a pooling or flatten layer>'")
    return keras.Model(model.inputs, {"logits": logits, "features": features},
                       name=f"{model.name}_view")
