"""Where an interrupted run continues: its newest readable checkpoint.

A checkpoint is the pair ``DIR/checkpoints/ckpt-N.index`` and
``ckpt-N.data-00000-of-00001`` (TensorFlow's tensor bundle: the index holds every tensor's
offset, length and CRC32C; the data file the bytes), written after N completed epochs, plus
the state file ``checkpoints/checkpoint`` naming the newest. A disk that filled up, a copy
cut short or a bad sector leaves a bundle TensorFlow cannot restore, and restoring would
die with a traceback (``IndexError: Read less bytes than requested``, ``DataLossError``) or
leave the model half assigned. So every tensor of a candidate is read back first
(:func:`unreadable`) and only then restored:

* the newest readable checkpoint is the one resumed from (:func:`newest_readable`); each
  unreadable newer one is reported in one line (which file, why) and, on the process that
  owns the workdir, its files are renamed with the suffix ``.corrupt`` (kept for
  inspection, never deleted) and the state file is rewritten to name what is left;
* with no readable checkpoint the run starts over from epoch 0;
* ``history.csv`` keeps only the rows of the epochs before the one resumed after
  (:func:`cskd_tf.runs.checkpoints.cut_history`): the later ones are trained again and
  logged anew, so the file always describes the weights training continues from. The data
  order, the learning-rate schedule (the optimizer's step counter) and λ's warm-up all
  follow the restored epoch.

The file side (checkpoint names, moving files aside, cutting history.csv) is
:mod:`cskd_tf.runs.checkpoints`; this module is what needs TensorFlow to read them.
"""

from __future__ import annotations

import glob
import os

import tensorflow as tf

from cskd_tf.runs import checkpoints as files
from cskd_tf.runs.checkpoints import (CORRUPT_SUFFIX, PREFIX, STATE_FILE, checkpoint_path,
                                      epoch_of, saved_epochs)


def unreadable(prefix) -> str | None:
    """Why the checkpoint ``prefix`` (``.../ckpt-N``) cannot be restored, or None.

    Reads every tensor back (each is checked against the CRC32C in the index), so a
    checkpoint that passes restores without error. The reason names the file at fault
    and TensorFlow's own first line about it.
    """
    name = os.path.basename(prefix)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError, IndexError, OSError) as error:
        return f"{name}.index: {_first_line(error)}"
    try:
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except (tf.errors.OpError, ValueError, IndexError, OSError) as error:
        data = [os.path.basename(p) for p in sorted(glob.glob(f"{glob.escape(prefix)}.data-*"))]
        return f"{', '.join(data) or name + '.data-*'}: {_first_line(error)}"
    return None


def newest_readable(checkpoint_dir, move_aside=True, warn=print):
    """The prefix of the newest readable checkpoint in ``checkpoint_dir`` (None: none).

    Each unreadable newer checkpoint is reported through ``warn`` in one line. With
    ``move_aside`` (the process that writes the workdir) its files get the suffix
    ``.corrupt`` and the state file is rewritten to list the readable checkpoints left;
    without it (a worker reading the chief's checkpoints) nothing is changed.
    """
    epochs = saved_epochs(checkpoint_dir)
    bad, chosen = [], None
    for epoch in epochs:
        prefix = checkpoint_path(checkpoint_dir, epoch)
        reason = unreadable(prefix)
        if reason is None:
            chosen = epoch
            break
        bad.append((epoch, reason))
    then = (f"resuming after epoch {chosen} ({PREFIX}-{chosen})" if chosen is not None
            else "no readable checkpoint is left, so training starts over from epoch 0")
    for epoch, reason in bad:
        prefix = checkpoint_path(checkpoint_dir, epoch)
        kept = (f"its files are renamed to {os.path.basename(prefix)}.*{CORRUPT_SUFFIX}"
                if move_aside else "it is left in place")
        if move_aside:
            files.move_aside(prefix)
        warn(f"warning: checkpoint {prefix} is unreadable ({reason}); {kept}; {then}")
    if move_aside and (bad or _state_names(checkpoint_dir) != chosen):
        _rewrite_state(checkpoint_dir, [e for e in epochs if chosen is not None and e <= chosen])
    return None if chosen is None else checkpoint_path(checkpoint_dir, chosen)


def _first_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _state_names(checkpoint_dir):
    """The epoch the state file names as newest (None: no or unreadable state file)."""
    return epoch_of(tf.train.latest_checkpoint(checkpoint_dir))


def _rewrite_state(checkpoint_dir, epochs):
    """Points the state file at the readable checkpoints ``epochs`` (newest first)."""
    state = os.path.join(checkpoint_dir, STATE_FILE)
    if not epochs:
        # It names only the files just moved aside.
        if os.path.exists(state):
            os.remove(state)
        return
    names = [f"{PREFIX}-{e}" for e in sorted(epochs)]
    tf.compat.v1.train.update_checkpoint_state(checkpoint_dir, names[-1],
                                               all_model_checkpoint_paths=names)
