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

The messages are a field-for-field subset of ``tensorflow_serving/config/
model_server_config.proto`` (same names and numbers), built here from a descriptor so that
exporting does not need the ``tensorflow-serving-api`` package. Entries cskd-export did not
write are kept as they are; a file using fields outside the subset (e.g. ``logging_config``)
is refused rather than silently rewritten without them.

Version policies (``--version_policy``):

* ``specific``: every exported version is listed and served; a new export is added to the
  list (versions the user removed from it stay removed);
* ``all``: the server loads every numeric version folder it finds;
* ``latest``: only the newest version (TF Serving's own default).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from cskd_tf.serving import ServingError

CONFIG_NAME = "models.config"
POLICIES = ("specific", "all", "latest")
HEADER = ("# TensorFlow Serving model config, maintained by cskd-export.\n"
          "# Serve with: tensorflow_model_server --model_config_file=THIS_FILE "
          "--port=8500 --rest_api_port=8501\n")

_F = descriptor_pb2.FieldDescriptorProto


def _field(message, name, number, kind, label=_F.LABEL_OPTIONAL, type_name=None):
    field = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = type_name


@functools.lru_cache(maxsize=1)
def server_config_class():
    """The ModelServerConfig message class (subset, wire- and text-compatible)."""
    package = "cskd_tf.serving.tfs_subset"
    proto = descriptor_pb2.FileDescriptorProto(name="cskd_tf_tfs_subset.proto", package=package,
                                               syntax="proto3")
    policy = proto.message_type.add(name="ServableVersionPolicy")
    latest = policy.nested_type.add(name="Latest")
    _field(latest, "num_versions", 1, _F.TYPE_UINT32)
    policy.nested_type.add(name="All")
    specific = policy.nested_type.add(name="Specific")
    _field(specific, "versions", 1, _F.TYPE_INT64, _F.LABEL_REPEATED)
    policy.oneof_decl.add(name="policy_choice")
    for name, number in (("latest", 100), ("all", 101), ("specific", 102)):
        _field(policy, name, number, _F.TYPE_MESSAGE,
               type_name=f".{package}.ServableVersionPolicy.{name.capitalize()}")
        policy.field[-1].oneof_index = 0

    model = proto.message_type.add(name="ModelConfig")
    _field(model, "name", 1, _F.TYPE_STRING)
    _field(model, "base_path", 2, _F.TYPE_STRING)
    _field(model, "model_platform", 4, _F.TYPE_STRING)
    _field(model, "model_version_policy", 7, _F.TYPE_MESSAGE,
           type_name=f".{package}.ServableVersionPolicy")
    entry = model.nested_type.add(name="VersionLabelsEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_INT64)
    _field(model, "version_labels", 8, _F.TYPE_MESSAGE, _F.LABEL_REPEATED,
           type_name=f".{package}.ModelConfig.VersionLabelsEntry")

    config_list = proto.message_type.add(name="ModelConfigList")
    _field(config_list, "config", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED,
           type_name=f".{package}.ModelConfig")
    server = proto.message_type.add(name="ModelServerConfig")
    _field(server, "model_config_list", 1, _F.TYPE_MESSAGE,
           type_name=f".{package}.ModelConfigList")

    pool = descriptor_pool.DescriptorPool()  # private: never clashes with the real protos
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName(f"{package}.ModelServerConfig")
    return message_factory.GetMessageClass(descriptor)


def read(path):
    """The parsed config at ``path`` (an empty one if the file does not exist)."""
    config = server_config_class()()
    if not os.path.exists(path):
        return config
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ServingError(f"{path} is not a model config cskd-export can update ({error}); "
                           "fix it by hand or move it aside and export again") from None
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
