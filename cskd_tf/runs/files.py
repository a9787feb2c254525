"""The JSON files of a run folder: written atomically, read with one-line errors."""

from __future__ import annotations

import json
import os

from cskd_tf import config as config_lib
from cskd_tf.errors import WorkdirError


def write_json_atomic(path, payload):
    """Writes ``payload`` (a JSON string, or an object to dump) to a temporary name and
    renames it onto ``path``, so a reader never sees a half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        if isinstance(payload, str):
            f.write(payload)
        else:
            json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def blocking_file(path):
    """The file that stops ``path`` from becoming a folder or holding a file: ``path`` itself
    or its nearest existing parent, when that is not a folder; else None."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    return None if os.path.isdir(existing) else existing


def make_folder(path, what="the workdir", fix="choose another --workdir",
                error_type=WorkdirError):
    """``os.makedirs(path)``; ``error_type`` (one line: ``what`` could not be created, why,
    and ``fix``) where that is impossible, e.g. ``path`` or a parent is a regular file, or a
    parent is read-only."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        reason = error.strerror or str(error)
        if os.path.exists(path) and not os.path.isdir(path):
            reason = "a file, not a folder, is there"
        raise error_type(f"cannot create {what} {path} ({reason}); {fix}") from None


def read_json(path):
    """The JSON object in ``path``; WorkdirError if it is not valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise WorkdirError(f"{path} is not valid JSON ({error})") from None


def recorded_precision(path: str, mixed_precision: str) -> str | None:
    """The Keras policy the run in ``path`` trained under.

    ``data.json``'s ``"runtime": {"precision": ...}``, written when training starts; for a
    run from before that record, what its ``config.mixed_precision`` (``mixed_precision``)
    names: ``""`` or ``float32`` -> float32. None: ``auto`` without a record yet, i.e. a run
    that has not started training.
    """
    facts_path = os.path.join(path, "data.json")
    facts = read_json(facts_path) if os.path.exists(facts_path) else {}
    runtime = facts.get("runtime") if isinstance(facts, dict) else None
    if isinstance(runtime, dict) and runtime.get("precision"):
        return str(runtime["precision"])
    return config_lib.fixed_precision(mixed_precision)
