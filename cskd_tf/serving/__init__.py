"""Deployment of trained cskd_tf models with TensorFlow Serving.

* :mod:`cskd_tf.serving.signatures`: the serving functions and their names (the contract);
* :mod:`cskd_tf.serving.export`: a finished workdir -> ``saved_models/NAME/<version>/``;
* :mod:`cskd_tf.serving.models_config`: TF Serving's ``models.config`` (text proto);
* :mod:`cskd_tf.serving.loading`: an export loaded back, with its assets and metadata;
* :mod:`cskd_tf.serving.local`: TF Serving's predict semantics over a loaded export, so
  ``cskd-predict --saved_model`` and the tests run the very requests a server would get;
* :mod:`cskd_tf.serving.client`: REST and gRPC request builders, clients and parsers;
* :mod:`cskd_tf.serving.evaluate`: the paper's metrics computed through an export alone.

Layout written by ``cskd-export`` (what ``tensorflow_model_server`` watches)::

    saved_models/models.config              --model_config_file for the server
    saved_models/NAME/1/saved_model.pb      signatures serving_default, predict_bytes, embed
    saved_models/NAME/1/variables/
    saved_models/NAME/1/assets/labels.txt   one class name per line
    saved_models/NAME/1/assets/cskd_export.json   preprocessing, data facts, signatures
    saved_models/NAME/1/assets/config.json  the training config

This package imports TensorFlow only inside the modules that need it, so the REST client
stays importable (and quick) where only numpy and the standard library are wanted.
"""

from cskd_tf.errors import CSKDError


class ServingError(CSKDError):
    """An export, a SavedModel, an image or a model server the user pointed at is unusable."""


__all__ = ["ServingError"]
