"""The file side of ``DIR/checkpoints/`` and ``DIR/history.csv``, without TensorFlow.

A checkpoint is the pair ``checkpoints/ckpt-N.index`` and ``ckpt-N.data-00000-of-00001``
(TensorFlow's tensor bundle: the index holds every tensor's offset, length and CRC32C; the
data file the bytes), written after N completed epochs, plus the state file
``checkpoints/checkpoint`` naming the newest. Checkpoints are found by their file names, not
through the state file, so a damaged state file hides none of them. Whether one can be read
back, and rewriting the state file, is TensorFlow's part (training/resume.py).
"""

from __future__ import annotations

import csv
import glob
import os
import re

PREFIX = "ckpt"
CORRUPT_SUFFIX = ".corrupt"
STATE_FILE = "checkpoint"
INDEX = re.compile(rf"^{PREFIX}-(\d+)\.index$")


def saved_epochs(checkpoint_dir) -> list[int]:
    """The N of every ``ckpt-N.index`` in ``checkpoint_dir``, newest first."""
    if not os.path.isdir(checkpoint_dir):
        return []
    found = (INDEX.match(name) for name in os.listdir(checkpoint_dir))
    return sorted((int(m.group(1)) for m in found if m), reverse=True)


def checkpoint_path(checkpoint_dir, epoch: int) -> str:
    return os.path.join(checkpoint_dir, f"{PREFIX}-{epoch}")


def epoch_of(prefix) -> int | None:
    """N of a checkpoint prefix ``.../ckpt-N`` (None: not a checkpoint name)."""
    match = INDEX.match(f"{os.path.basename(prefix)}.index") if prefix else None
    return int(match.group(1)) if match else None


def move_aside(prefix):
    """Renames every file of checkpoint ``prefix`` with the suffix ``.corrupt`` (kept for
    inspection, never deleted; a second corrupt ``ckpt-N`` gets ``.corrupt1``, ...)."""
    for path in glob.glob(f"{glob.escape(prefix)}.*"):
        if path.endswith(CORRUPT_SUFFIX):
            continue
        target, n = path + CORRUPT_SUFFIX, 1
        while os.path.exists(target):  # an earlier ckpt-N of the same number was corrupt too
            target, n = f"{path}{CORRUPT_SUFFIX}{n}", n + 1
        os.replace(path, target)


def cut_history(path, completed_epochs: int) -> int:
    """Keeps the header and the rows of epochs ``< completed_epochs`` of a history.csv.

    Keras' CSVLogger writes the 0-based epoch first on each row; a row for a later epoch
    (trained after the checkpoint resumed from, or logged just before a kill) is dropped,
    as is a row cut short by a kill. For an epoch logged twice, the later row is kept.
    Returns how many rows were dropped; the file is replaced atomically.
    """
    if not os.path.exists(path):
        return 0
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        return 0
    header, rows = lines[0], lines[1:]
    width = len(next(csv.reader([header])))
    kept = {}
    for line in rows:
        fields = next(csv.reader([line]), [])
        try:
            epoch = int(fields[0])
        except (IndexError, ValueError):
            continue
        if epoch < completed_epochs and len(fields) == width and line.endswith("\n"):
            kept[epoch] = line
    dropped = len(rows) - len(kept)
    if dropped:
        tmp = f"{path}.tmp"
        with open(tmp, "w", newline="") as f:
            f.write(header if kept else "")
            f.writelines(kept[e] for e in sorted(kept))
        os.replace(tmp, path)
    return dropped
