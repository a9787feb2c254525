"""An export loaded back: its signatures, the assets that travel with it, its metadata.

``metadata()`` reports the signatures the way TF Serving's metadata endpoint
(``GET /v1/models/NAME/versions/N/metadata``) does: the SignatureDefMap of the MetaGraphDef
tagged ``serve``, as JSON with proto field names. The tests check the contract through it,
so what they assert is what a client of a real server sees.
"""

from __future__ import annotations

import json
import os

from cskd_tf.serving import ServingError
from cskd_tf.signatures import LABELS, MANIFEST  # noqa: F401 (read here by the serving code)

CONFIG = "config.json"
SERVE_TAG = "serve"


def check_saved_model(path) -> str:
    """``path`` as an absolute directory holding a SavedModel, or a one-line ServingError."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(path):
        raise ServingError(f"{path} is not a directory; pass a version folder written by "
                           "cskd-export, e.g. saved_models/NAME/1")
    if not (os.path.isfile(os.path.join(path, "saved_model.pb"))
            or os.path.isfile(os.path.join(path, "saved_model.pbtxt"))):
        hint = ""
        versions = sorted((d for d in os.listdir(path) if d.isdigit()), key=int)
        if versions:
            hint = f" (it holds versions {', '.join(versions)}: pass {path}/{versions[-1]})"
        raise ServingError(f"{path} is not a SavedModel: it has no saved_model.pb{hint}")
    return path


def read_signature_defs(path) -> dict:
    """{signature name: SignatureDef proto} of the ``serve`` MetaGraphDef, without loading."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = check_saved_model(path)
    saved = saved_model_pb2.SavedModel()
    pb = os.path.join(path, "saved_model.pb")
    try:
        with open(pb, "rb") as f:
            saved.ParseFromString(f.read())
    except (OSError, DecodeError) as error:  # unreadable, or a truncated or foreign file
        raise ServingError(f"{pb} cannot be parsed as a SavedModel ({error})") from None
    for meta_graph in saved.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ServingError(f"{path} has no MetaGraphDef tagged '{SERVE_TAG}', which TF Serving loads")


def signature_metadata(path) -> dict:
    """The ``metadata.signature_def`` part of TF Serving's REST metadata response."""
    from google.protobuf import json_format

    defs = read_signature_defs(path)
    return {"signature_def": {
        name: json_format.MessageToDict(sig, preserving_proto_field_name=True)
        for name, sig in sorted(defs.items())}}


def tensor_summary(metadata: dict, signature: str) -> dict:
    """{"inputs"|"outputs": {name: (dtype, shape)}} of one signature in ``metadata``.

    Unknown dimensions are -1, as ``tensor_shape.dim[i].size`` reports them.
    """
    sig = metadata["signature_def"][signature]
    result = {}
    for side in ("inputs", "outputs"):
        result[side] = {}
        for name, info in sig.get(side, {}).items():
            dims = info.get("tensor_shape", {}).get("dim", [])
            result[side][name] = (info["dtype"], [int(d.get("size", 0)) for d in dims])
    return result


class ExportedModel:
    """A cskd-export version folder, loaded with ``tf.saved_model.load``.

    Attributes: ``path``, ``signatures`` (name -> concrete function), ``manifest`` (the
    dict in assets/cskd_export.json, or {} for a SavedModel cskd-export did not write),
    ``class_names``.
    """

    def __init__(self, path):
        self.path = check_saved_model(path)  # before importing TensorFlow: a quick error
        import tensorflow as tf

        self.manifest = self._read_asset(MANIFEST, json.load) or {}
        try:
            self._loaded = tf.saved_model.load(self.path)
        # Corrupt variables, missing custom ops, version skew: TF raises many unrelated
        # types here, so the catch is blind and the error is reported in one line.
        except Exception as error:  # noqa: BLE001
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ServingError(f"{self.path} could not be loaded as a SavedModel ({message})") \
                from None
        self.signatures = dict(self._loaded.signatures)
        self.class_names = list(self.manifest.get("class_names") or [])

    def _read_asset(self, name, reader):
        path = os.path.join(self.path, "assets", name)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return reader(f)

    def signature(self, name):
        if name not in self.signatures:
            raise ServingError(f"{self.path} has no signature '{name}'; it has: "
                               f"{', '.join(sorted(self.signatures))}")
        return self.signatures[name]

    def training_config(self):
        """The training config that travelled with the export (assets/config.json)."""
        from cskd_tf import config as config_lib

        text = self._read_asset(CONFIG, lambda f: f.read())
        if text is None:
            raise ServingError(f"{self.path}/assets/{CONFIG} is missing: this SavedModel was "
                               "not written by cskd-export; pass --config=configs/NAME.py")
        return config_lib.from_json(text)

    def metadata(self):
        return signature_metadata(self.path)
