"""Writing a run folder (the files: :mod:`cskd_tf.runs`), and the rule that protects it.

One writer per workdir: :meth:`Workdir.prepare_for_training` takes ``train.lock``
(an exclusive ``flock`` on it, held until the process ends) before it touches
anything, so a second ``cskd-train`` on the same DIR stops with a WorkdirError
naming the running process instead of writing the same checkpoints and history.
The kernel drops the lock when its process dies, even by ``kill -9``, so a lock
file left behind is stale and the next run takes it over. Where ``flock`` is not
supported (some network filesystems) the file's pid is checked instead: stale
when it names this host and no live process has that pid.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import shutil
import socket
import time

from cskd_tf import config as config_lib
from cskd_tf.errors import WorkdirError
from cskd_tf.runs.files import make_folder, recorded_precision, write_json_atomic

# Fields that may differ between an interrupted run and its resumption. mixed_precision is
# compared by the policy it resolves to instead ("auto" may mean another one elsewhere, and
# "" and "float32" are the same): see prepare_for_training.
RESUME_FREE_FIELDS = ("verbose", "mixed_precision")


LOCK_NAME = "train.lock"
# Locks this process holds: workdir path -> open file descriptor. A second
# prepare_for_training in the same process (a resumed train() call) reuses it.
_HELD: dict[str, int] = {}


class Workdir:
    def __init__(self, path):
        self.path = os.path.abspath(path)

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def checkpoint_dir(self):
        return self.file("checkpoints")

    def is_finished(self):
        return os.path.exists(self.file("metrics.json"))

    def has_run(self):
        return os.path.exists(self.file("config.json"))

    def refuse_if_finished(self, overwrite=False):
        if self.is_finished() and not overwrite:
            raise WorkdirError(f"{self.path} already holds a finished run; pass --overwrite to "
                               "replace it or choose another --workdir")

    def prepare_for_training(self, config, overwrite=False, precision=None):
        """Creates the workdir, or checks that a run in it may be resumed.

        Takes the workdir's lock first (WorkdirError if another live process holds it).
        ``precision`` is the Keras policy this process trains under (the trainer passes
        ``runtime.precision()``; None: what ``config.mixed_precision`` names, no check for
        ``auto``). A run that trained under another policy is not resumed under this one:
        its epochs would mix two precisions.
        """
        self.lock()
        self.refuse_if_finished(overwrite)
        if overwrite:
            self._clear(keep=LOCK_NAME)
        if self.has_run():
            previous = self.load_config()
            changed = [k for k in config.keys() if k not in RESUME_FREE_FIELDS
                       and _plain(previous.get(k)) != _plain(config.get(k))]
            if changed:
                raise WorkdirError(
                    f"{self.path} holds an unfinished run with a different config "
                    f"(fields: {', '.join(sorted(changed))}); rerun with the same config to "
                    "resume, "
                    "or pass --overwrite to start over")
            before = recorded_precision(self.path, previous.mixed_precision)
            now = precision or config_lib.fixed_precision(config.mixed_precision)
            if before and now and before != now:
                raise WorkdirError(
                    f"{self.path} holds an unfinished run trained under {before} but this "
                    f"run would continue under {now} (config.mixed_precision="
                    f"{config.mixed_precision!r}); pass --config.mixed_precision={before} to "
                    "resume it, or --overwrite to start over")
        make_folder(self.path)
        write_json_atomic(self.file("config.json"), config_lib.to_json(config))

    def lock(self):
        """Makes this process the workdir's only writer until it exits (see the module doc)."""
        if self.path in _HELD:
            return
        make_folder(self.path)
        path = self.file(LOCK_NAME)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise WorkdirError(
                    f"{self.path} is in use by cskd-train pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')} (started {holder.get('started', '?')}); wait "
                    "for it to finish or stop it, or choose another --workdir") from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise
                # No flock here: trust the recorded pid where it can be checked.
                holder = _read_holder(fd)
                if _alive_elsewhere(holder):
                    os.close(fd)
                    raise WorkdirError(
                        f"{self.path} is in use by cskd-train pid {holder['pid']} on "
                        f"{holder['host']}; wait for it to finish or stop it, or choose "
                        "another --workdir") from None
            # A lock file unlinked by its releasing owner between our open and flock: retry
            # on the file now at the path, so two runs never hold different inodes.
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record + b"\n", 0)
        _HELD[self.path] = fd
        atexit.register(self.unlock)

    def unlock(self):
        """Removes the lock file and releases the lock (at exit, or by hand)."""
        fd = _HELD.pop(self.path, None)
        if fd is None:
            return
        try:
            os.remove(self.file(LOCK_NAME))
        except OSError:
            pass
        os.close(fd)

    def _clear(self, keep):
        """Empties the workdir (for --overwrite) but for the held lock file."""
        if not os.path.isdir(self.path):
            return
        for name in os.listdir(self.path):
            if name == keep:
                continue
            target = self.file(name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.remove(target)

    def load_config(self):
        if not self.has_run():
            raise WorkdirError(f"{self.path} holds no training run (no config.json); "
                               "train one with cskd-train --workdir=DIR first")
        with open(self.file("config.json")) as f:
            text = f.read()
        try:
            return config_lib.from_json(text)
        except (ValueError, TypeError) as error:  # json.JSONDecodeError is a ValueError
            raise WorkdirError(f"{self.file('config.json')} is not a valid config ({error}); "
                               "restore it from a copy or start the run over with "
                               "--overwrite") from None

    def write(self, name, payload):
        write_json_atomic(self.file(name), payload)

    def read(self, name):
        path = self.file(name)
        if not os.path.exists(path):
            raise WorkdirError(f"{path} is missing; the run in {self.path} is incomplete — "
                               "rerun cskd-train with the same --workdir to finish it")
        with open(path) as f:
            try:
                return json.load(f)
            except ValueError as error:
                raise WorkdirError(f"{path} is not valid JSON ({error}); restore it from a copy "
                                   "or rerun cskd-train with --overwrite") from None


def _read_holder(fd) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive_elsewhere(holder: dict) -> bool:
    """Whether the recorded holder may still run: another live pid on this host, or any
    pid on another host (which cannot be checked from here)."""
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or not host:
        return False
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _plain(value):
    """Compares configs by value, whatever container types JSON gave back."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return json.loads(json.dumps(value, sort_keys=True, default=list))
