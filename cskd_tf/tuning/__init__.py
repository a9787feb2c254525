"""Hyperparameter search for CS-KD with Keras Tuner (the ``cskd-tune`` command).

* :mod:`cskd_tf.tuning.space`: the search space from ``config.search`` and the objectives;
* :mod:`cskd_tf.tuning.hypermodel`: the HyperModel (the trainer's model, data and callbacks);
* :mod:`cskd_tf.tuning.tuner`: oracles and the Tuner that runs one trial;
* :mod:`cskd_tf.tuning.distributed`: Keras Tuner's chief/worker mode;
* :mod:`cskd_tf.tuning.results`: trials.csv, the printed table, best.json;
* :mod:`cskd_tf.tuning.search`: the whole run, as ``cskd-tune`` does it.

Importing this package (and ``space``) does not import TensorFlow.
"""

from cskd_tf.tuning.space import OBJECTIVES, SearchSpace, objective_direction

__all__ = ["OBJECTIVES", "SearchSpace", "objective_direction"]
