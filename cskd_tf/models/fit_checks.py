"""The checks CSKDModel.fit runs on its training data before the first step.

Each misuse a Keras user can make with a paired-data model gets one line naming the fix,
instead of an error from inside the traced step:

* batches of (image, label) for a method that needs pairs ((anchor, partner), label)
  → build them with ``cskd_tf.data.pairs_from_dataset``;
* fewer views per batch than the method's ``views`` (``cskd_e`` needs three);
* a dataset whose class count (``pairs_from_dataset`` attaches ``num_classes``) differs
  from the model's logits width.

Labels outside 0..C−1 and single-class data are refused where the labels are read
(``pairs_from_dataset``); a softmax/sigmoid output layer and a one-logit head where the
model is wrapped (:mod:`cskd_tf.models.classifier_view`).
"""

from __future__ import annotations

import tensorflow as tf

from cskd_tf.errors import DataError, ModelError


def _views_in(element_spec):
    """The number of image views of a batch spec (x, y[, w]); None if not a dataset batch."""
    if not isinstance(element_spec, tuple) or len(element_spec) < 2:
        return None
    x = element_spec[0]
    return len(x) if isinstance(x, (tuple, list)) else 1


def check_fit_data(model, data):
    """DataError/ModelError when ``data`` (what fit got as x; None: arrays were given as x
    and y) cannot train ``model`` with its method."""
    method = model.method
    needed = len(method.views)
    if isinstance(data, tf.data.Dataset):
        views = _views_in(data.element_spec)
    elif data is None:
        views = 1  # fit(x=images, y=labels): one view
    else:
        return  # generators and PyDatasets: Keras reads them lazily; nothing to inspect
    if views is not None and views < needed:
        names = ", ".join(method.views)
        if views == 1:
            raise DataError(f"fit() got (image, label) batches, but method {method.name!r} "
                            f"trains on ({names}) views; build them with "
                            f"cskd_tf.data.pairs_from_dataset(ds, batch_size=..., seed=..., "
                            f"views={tuple(method.views)!r})")
        raise DataError(f"fit() got batches of {views} views, but method {method.name!r} "
                        f"needs {needed} ({names}); build them with "
                        f"cskd_tf.data.pairs_from_dataset(..., views={tuple(method.views)!r})")
    classes = getattr(data, "num_classes", None)
    width = model.num_classes
    if classes is not None and width is not None and int(classes) != int(width):
        raise ModelError(f"the model outputs {width} logits but the data has {classes} classes; "
                         f"end the network with a Dense({classes}) layer (no activation)")
