"""The run folder: what ``cskd-train --workdir=DIR`` writes, and the one way to read it back.

Every file of a run, and who writes it:

    DIR/config.json     the full config the run was started with (``config.to_json``); its
                        presence is what makes DIR a run (:func:`find_run_dirs`)
    DIR/data.json       dataset facts the model needs later: ``num_classes``, ``image_shape``,
                        ``mean``, ``std``, ``class_names``, ...; and ``"runtime"``:
                        {``"precision"``: the Keras policy the run trains under,
                        ``"distribution"``: the strategy, replicas, workers and this process's
                        TF_CONFIG task (training/distribute.py ``Placement.record``)}
    DIR/checkpoints/    model + optimizer + completed epochs, ``ckpt-N.index`` and
                        ``ckpt-N.data-*`` after N epochs (last 2 kept), and the state file
                        ``checkpoint``; unreadable ones are renamed ``*.corrupt``
                        (:mod:`cskd_tf.runs.checkpoints`, training/resume.py)
    DIR/history.csv     one row of logs per epoch, the 0-based epoch first (Keras' CSVLogger;
                        appended across resumes, cut back to the epoch a resume starts after)
    DIR/tensorboard/    TensorBoard event files
    DIR/model.keras     the finished model (``model.save``), loadable without this package's
                        config: what cskd-eval and cskd-export take besides DIR itself
    DIR/metrics.json    final metrics, ``{split: {metric: value}}``; written last, so it marks
                        a finished run
    DIR/train.lock      {"pid", "host", "started"} of the cskd-train process writing DIR
                        (:meth:`Workdir.lock`)

Every JSON file is written to a temporary name and renamed, so an interrupted run never
leaves a truncated file behind.

Writing is :class:`Workdir` (:mod:`cskd_tf.runs.folder`); reading and checking is
:func:`load_run`, which returns a :class:`Run`; rebuilding the model of a run is TensorFlow's
part and lives in :mod:`cskd_tf.training.restore`. Nothing here imports TensorFlow, so
listing and reporting runs is instant.
"""

from cskd_tf.runs.files import (blocking_file, make_folder, read_json, recorded_precision,
                                write_json_atomic)
from cskd_tf.runs.folder import LOCK_NAME, RESUME_FREE_FIELDS, Workdir
from cskd_tf.runs.read import (SUBSET_FIELDS, Run, dataset_label, find_run_dirs,
                               is_standalone_keras_file, load_run, model_label)

__all__ = ["LOCK_NAME", "RESUME_FREE_FIELDS", "SUBSET_FIELDS", "Run", "Workdir", "blocking_file",
           "dataset_label",
           "find_run_dirs", "is_standalone_keras_file", "load_run", "make_folder", "model_label",
           "read_json",
           "recorded_precision", "write_json_atomic"]
