"""TF Serving's model config file (``--model_config_file``), read and written as text proto.

The file ``saved_models/models.config`` lists every exported model::

    model_config_list {
      config {
        name: "digits"
        base_path: "/abs/path/saved_models/digits"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 1 versions: 2 } }
      }
    }

The file is parsed and written with TF Serving's own messages
(``tensorflow_serving.config.model_server_config_pb2``, from the
``tensorflow-serving-api`` package), so every field the server accepts
(``logging_config``, ``model_type``, ``version_labels``, ...) is read and written back
as it was; cskd-export only changes the entry of the model it exports. A file that
does not parse is refused with the parse error (line:column), never rewritten.
Comments are not kept (text format has no place for them) apart from the header
cskd-export writes.

Version policies (``--version_policy``):

* ``specific``: every exported version is listed and served; a new export is added to the
  list (versions the user removed from it stay removed);
* ``all``: the server loads every numeric version folder it finds;
* ``latest``: only the newest version (TF Serving's own default).
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from cskd_tf.serving import ServingError

CONFIG_NAME = "models.config"
POLICIES = ("specific", "all", "latest")
HEADER = ("# TensorFlow Serving model config, maintained by cskd-export.\n"
          "# Serve with: tensorflow_model_server --model_config_file=THIS_FILE "
          "--port=8500 --rest_api_port=8501\n")


def _refuse(path, problem):
    return ServingError(f"{path} is not a model config cskd-export can update ({problem}); "
                        "fix it by hand or move it aside and export again")


def read(path):
    """The parsed config at ``path`` (an empty one if the file does not exist)."""
    config = model_server_config_pb2.ModelServerConfig()
    if not os.path.exists(path):
        return config
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        # str(error) is "line:column : message"; one line for the CLI's `error: ...`.
        raise _refuse(path, " ".join(str(error).split())) from None
    if config.WhichOneof("config") == "custom_model_config":
        # Adding a model_config_list would silently replace it (they are one oneof).
        raise _refuse(path, "it uses custom_model_config, not model_config_list")
    return config


def to_text(config) -> str:
    return HEADER + text_format.MessageToString(config)


def _find(config, name):
    for entry in config.model_config_list.config:
        if entry.name == name:
            return entry
    return None


def add_version(config, name, base_path, version, policy=None):
    """Adds ``version`` of model ``name`` to ``config`` (in place) and returns the entry.

    ``policy`` None keeps an existing model's policy (a new model gets ``specific``); a
    policy name replaces it. The entry always gets ``base_path`` (the export may have moved).
    """
    if policy is not None and policy not in POLICIES:
        raise ServingError(f"--version_policy={policy!r} is not one of {', '.join(POLICIES)}")
    entry = _find(config, name)
    if entry is None:
        entry = config.model_config_list.config.add(name=name)
    entry.base_path = base_path
    if not (entry.model_type == model_server_config_pb2.TENSORFLOW and not entry.model_platform):
        # The server refuses an entry with both the deprecated model_type and
        # model_platform; one that already says TENSORFLOW the old way is left so.
        entry.ClearField("model_type")
        entry.model_platform = "tensorflow"
    vp = entry.model_version_policy
    current = vp.WhichOneof("policy_choice")
    policy = policy or current or "specific"
    if current != policy:
        vp.Clear()
        if policy == "all":
            vp.all.SetInParent()
        elif policy == "latest":
            vp.latest.num_versions = 1
    if policy == "specific" and int(version) not in vp.specific.versions:
        # Sorted for a stable, readable file.
        ordered = sorted([*vp.specific.versions, int(version)])
        del vp.specific.versions[:]
        vp.specific.versions.extend(ordered)
    return entry


def served_versions(config, name):
    """Versions pinned for ``name`` (specific policy), else None (all / latest)."""
    entry = _find(config, name)
    if entry is None:
        return None
    vp = entry.model_version_policy
    return list(vp.specific.versions) if vp.WhichOneof("policy_choice") == "specific" else None


@contextlib.contextmanager
def _locked(directory):
    # Two exports into one base directory must not lose each other's entries. The lock is
    # taken on the directory itself, so no lock file is left beside models.config.
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def update(export_base, name, base_path, version, policy=None):
    """Reads, updates and atomically rewrites ``export_base/models.config``; returns its path."""
    path = os.path.join(export_base, CONFIG_NAME)
    with _locked(export_base):
        config = read(path)
        add_version(config, name, base_path, version, policy)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(to_text(config))
        # A polling server (--model_config_file_poll_wait_seconds) never sees a half file.
        os.replace(tmp, path)
    return path
