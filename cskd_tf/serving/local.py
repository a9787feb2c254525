"""TF Serving's predict and metadata semantics over exports loaded in this process.

``cskd-predict --saved_model=PATH`` sends its request here instead of over the network,
and the tests put this behind a tiny HTTP / gRPC server on 127.0.0.1, so the request a
client builds is executed exactly as a server would execute it. What is emulated (from TF
Serving's REST API documentation and its JSON <-> tensor rules):

* ``{"signature_name": S, "instances": [...]}`` (row format): with one input each instance
  is that input's value, otherwise an object {input name: value}; ``{"b64": "..."}`` is a
  binary string. ``{"inputs": ...}`` (columnar) is accepted too.
* the answer is ``{"predictions": [...]}`` — one object {output name: value} per instance,
  or the bare value when the signature has one output — or ``{"outputs": ...}`` for a
  columnar request. String outputs are UTF-8 text, base64 objects when the output name ends
  in ``_bytes``.
* errors are ``{"error": "..."}`` with HTTP 400 (bad request) or 404 (unknown model,
  version or signature), as :class:`RequestError`.
* gRPC: ``PredictRequest`` -> ``PredictResponse`` with ``output_filter`` and the served
  ``model_spec`` (version filled in).
"""

from __future__ import annotations

import base64
import os

import numpy as np

from cskd_tf.serving import ServingError
from cskd_tf.serving.loading import ExportedModel
from cskd_tf.serving.signatures import SERVING_DEFAULT

_NP_DTYPES = {
    "DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_INT32": np.int32,
    "DT_INT64": np.int64, "DT_UINT8": np.uint8, "DT_INT8": np.int8, "DT_INT16": np.int16,
    "DT_UINT16": np.uint16, "DT_BOOL": np.bool_, "DT_HALF": np.float16, "DT_STRING": object,
}


class RequestError(ServingError):
    """A request TF Serving would refuse; ``status`` is the HTTP status it would use."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = int(status)


def _decode_json_string(value, where):
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise RequestError(f"{where}: a binary value must be an object with only a 'b64' key")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError) as error:
            raise RequestError(f"{where}: 'b64' is not valid base64 ({error})") from None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list):
        return [_decode_json_string(v, where) for v in value]
    raise RequestError(f"{where}: expected a string or {{\"b64\": ...}}, "
                       f"got {type(value).__name__}")


def _to_array(values, dtype_name, where):
    """A JSON value list -> numpy array of the signature input's dtype."""
    if dtype_name == "DT_STRING":
        try:
            return np.array(_decode_json_string(values, where), dtype=object)
        except ValueError:
            raise RequestError(f"{where}: the values do not form a rectangular tensor") from None
    np_dtype = _NP_DTYPES.get(dtype_name)
    if np_dtype is None:
        raise RequestError(f"{where}: input dtype {dtype_name} is not supported here")
    try:
        array = np.asarray(values)
    except ValueError:  # numpy refuses ragged nesting
        raise RequestError(f"{where}: the values do not form a rectangular tensor (all "
                           "instances of one request must have the same shape)") from None
    if array.dtype == object:
        raise RequestError(f"{where}: the values do not form a rectangular numeric tensor")
    if np.issubdtype(np_dtype, np.integer):
        if not np.issubdtype(array.dtype, np.integer) and array.size:
            raise RequestError(f"{where}: expected integers for {dtype_name}")
        info = np.iinfo(np_dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise RequestError(f"{where}: values outside the range of {dtype_name}")
    return array.astype(np_dtype)


def _to_json(array, name):
    """A numpy output -> JSON value, as TF Serving writes it."""
    if array.dtype == object or array.dtype.kind == "S":
        def text(b):
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(b).decode("ascii")}
            return b.decode("utf-8")
        return np.vectorize(text, otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def _signature_error(error):
    """The first line of a TF error: what TF Serving would put in "error"."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class LocalServer:
    """Loaded exports answering TF Serving predict / metadata requests.

    ``models``: {model name: {version: path}} or {model name: path} (one version).
    """

    def __init__(self, models):
        self._paths = {}
        for name, versions in models.items():
            if not isinstance(versions, dict):
                versions = {self._version_of(versions): versions}
            self._paths[name] = {int(v): p for v, p in versions.items()}
        self._loaded = {}

    @staticmethod
    def _version_of(path):
        base = os.path.basename(os.path.normpath(str(path)))
        return int(base) if base.isdigit() else 1

    def model(self, name, version=None):
        """(version, ExportedModel); RequestError 404 as TF Serving's 'not found'."""
        if name not in self._paths:
            raise RequestError(f"Servable not found for request: Latest({name})", status=404)
        versions = self._paths[name]
        if version is None:
            version = max(versions)
        version = int(version)
        if version not in versions:
            raise RequestError(f"Servable not found for request: Specific({name}, {version})",
                               status=404)
        key = (name, version)
        if key not in self._loaded:
            self._loaded[key] = ExportedModel(versions[version])
        return version, self._loaded[key]

    # ------------------------------------------------------------------- REST
    def metadata(self, name, version=None) -> dict:
        version, model = self.model(name, version)
        return {"model_spec": {"name": name, "signature_name": "", "version": str(version)},
                "metadata": {"signature_def": model.metadata()}}

    def predict(self, name, request, version=None) -> dict:
        """The JSON answer to ``POST /v1/models/NAME[/versions/N]:predict`` with ``request``."""
        from tensorflow.core.framework import types_pb2

        _, model = self.model(name, version)
        if not isinstance(request, dict):
            raise RequestError("the request body must be a JSON object")
        signature_name = request.get("signature_name") or SERVING_DEFAULT
        if signature_name not in model.signatures:
            raise RequestError(f"Serving signature name: \"{signature_name}\" not found in "
                               "signature def", status=404)
        fn = model.signatures[signature_name]
        specs = fn.structured_input_signature[1]
        input_names = sorted(specs)
        dtypes = {k: types_pb2.DataType.Name(specs[k].dtype.as_datatype_enum) for k in specs}
        row = "instances" in request
        if row == ("inputs" in request):
            raise RequestError("the request must have exactly one of 'instances' (row format) "
                               "or 'inputs' (columnar format)")
        if row:
            instances = request["instances"]
            if not isinstance(instances, list) or not instances:
                raise RequestError("'instances' must be a non-empty list")
            named = (len(input_names) > 1 or all(
                isinstance(i, dict) and "b64" not in i for i in instances))
            if named:
                columns = {}
                for k in input_names:
                    try:
                        columns[k] = [i[k] for i in instances]
                    except (KeyError, TypeError):
                        raise RequestError(f"every instance must be an object with the input "
                                           f"'{k}'") from None
            else:
                columns = {input_names[0]: instances}
        else:
            inputs = request["inputs"]
            named = isinstance(inputs, dict) and "b64" not in inputs
            columns = inputs if named else {input_names[0]: inputs}
            missing = set(input_names) - set(columns)
            if missing:
                raise RequestError(f"missing inputs: {', '.join(sorted(missing))}")
        arrays = {k: _to_array(columns[k], dtypes[k], f"input '{k}'") for k in input_names}
        outputs = self._call(fn, arrays)
        if row:
            n = {v.shape[0] if v.ndim else None for v in outputs.values()}
            if len(n) != 1 or None in n:
                raise RequestError("outputs have different batch sizes; use the columnar format")
            (size,) = n
            if len(outputs) == 1:
                ((key, value),) = outputs.items()
                return {"predictions": _to_json(value, key)}
            per_output = {k: _to_json(v, k) for k, v in outputs.items()}
            return {"predictions": [{k: per_output[k][i] for k in sorted(per_output)}
                                    for i in range(size)]}
        if len(outputs) == 1:
            ((key, value),) = outputs.items()
            return {"outputs": _to_json(value, key)}
        return {"outputs": {k: _to_json(v, k) for k, v in sorted(outputs.items())}}

    @staticmethod
    def _call(fn, arrays):
        import tensorflow as tf

        try:
            tensors = {k: tf.constant(v) for k, v in arrays.items()}
            out = fn(**tensors)
        except (TypeError, ValueError, tf.errors.OpError) as error:
            # Wrong dtype/rank (refused by the signature) or undecodable image bytes.
            raise RequestError(_signature_error(error)) from None
        return {k: v.numpy() for k, v in out.items()}

    # ------------------------------------------------------------------- gRPC
    def predict_proto(self, request):
        """PredictRequest -> PredictResponse, as PredictionService/Predict answers."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        version, model = self.model(spec.name, version)
        signature_name = spec.signature_name or SERVING_DEFAULT
        if signature_name not in model.signatures:
            raise RequestError(f"Serving signature name: \"{signature_name}\" not found in "
                               "signature def", status=404)
        fn = model.signatures[signature_name]
        expected = set(fn.structured_input_signature[1])
        if set(request.inputs) != expected:
            raise RequestError(f"the request's inputs {sorted(request.inputs)} are not the "
                               f"signature's inputs {sorted(expected)}")
        arrays = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        outputs = self._call(fn, arrays)
        wanted = list(request.output_filter) or sorted(outputs)
        unknown = set(wanted) - set(outputs)
        if unknown:
            raise RequestError(f"output_filter names unknown outputs: {', '.join(sorted(unknown))}")
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.signature_name = signature_name
        response.model_spec.version.value = version
        for key in wanted:
            response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
        return response
