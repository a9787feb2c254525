"""Clients of a TF Serving model exported by cskd-export: REST (default) and gRPC.

REST (``POST http://HOST:PORT/v1/models/NAME[/versions/N]:predict``), row format::

    {"signature_name": "predict_bytes",
     "instances": [{"b64": "<base64 of the JPEG/PNG file>"}, ...]}
    -> {"predictions": [{"top_k_classes": [3, 8, ...], "top_k_scores": [0.91, ...],
                         "class_names": ["0", "1", ...], "probabilities": [...],
                         "logits": [...]}, ...]}

gRPC (``tensorflow.serving.PredictionService/Predict`` on HOST:PORT, needs the
``tensorflow-serving-api`` package)::

    PredictRequest {
      model_spec { name: NAME  signature_name: "predict_bytes"  version { value: N } }
      inputs { key: "image_bytes"
               value { dtype: DT_STRING  tensor_shape { dim { size: n } }
                       string_val: <file bytes> ... } }
      output_filter: "top_k_classes"  output_filter: "top_k_scores"  output_filter: "class_names"
    }

Images are sent as their encoded files: the export decodes, resizes and normalises them
in its graph. Files in a format the graph cannot decode (anything but JPEG, PNG, GIF and
BMP, e.g. WebP or TIFF) are re-encoded as PNG here first.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import urllib.error
import urllib.request

from cskd_tf.serving import ServingError
from cskd_tf.serving import signatures as sig

# What tf.io.decode_image reads inside the serving graph (PIL's format names).
GRAPH_FORMATS = ("JPEG", "PNG", "GIF", "BMP")
DEFAULT_TIMEOUT_S = 30.0


@dataclasses.dataclass
class Prediction:
    """The top-k answer for one image."""

    classes: list  # int class indices, best first
    scores: list  # their probabilities
    names: list  # their class names

    def as_dict(self):
        return {"top_k": [{"class": c, "name": n, "score": s}
                          for c, n, s in zip(self.classes, self.names, self.scores)]}


# --------------------------------------------------------------------------- images
def read_image(path) -> bytes:
    """The encoded bytes of an image file, checked to decode; ServingError otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ServingError(f"cannot read image {path}: {error.strerror or error}") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            image.load()  # decodes fully: truncated or corrupt files fail here, not on the server
            if image_format in GRAPH_FORMATS:
                return data
            out = io.BytesIO()
            image.save(out, format="PNG")
            return out.getvalue()
    except UnidentifiedImageError:
        raise ServingError(f"cannot decode image {path}: not an image file PIL recognises "
                           f"({len(data)} bytes)") from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data
        raise ServingError(f"cannot decode image {path}: {error}") from None


# --------------------------------------------------------------------------- REST
def parse_server(server) -> str:
    """``HOST:PORT`` (or ``http://HOST:PORT``) -> base URL ``http://HOST:PORT``."""
    text = str(server or "").strip().rstrip("/")
    if not re.fullmatch(r"(https?://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):\d{1,5}", text):
        raise ServingError(f"--server={server!r} is not HOST:PORT (e.g. localhost:8501 for "
                           "REST, localhost:8500 with --grpc)")
    return text if text.startswith(("http://", "https://")) else f"http://{text}"


def rest_url(server, model_name, version=None, verb="predict") -> str:
    """``/v1/models/NAME[/versions/N]:predict`` (or ``/metadata`` for verb="metadata")."""
    url = f"{parse_server(server)}/v1/models/{model_name}"
    if version is not None:
        url += f"/versions/{int(version)}"
    return f"{url}/metadata" if verb == "metadata" else f"{url}:{verb}"


def rest_request(inputs, signature_name=sig.PREDICT_BYTES) -> dict:
    """The row-format body: ``{"signature_name": S, "instances": [...]}``.

    ``inputs``: a list of encoded images (bytes) -> ``{"b64": ...}`` instances, or a uint8
    array (N, H, W, C) for ``serving_default`` / ``embed`` -> nested lists.
    """
    if isinstance(inputs, (list, tuple)) and all(isinstance(i, (bytes, bytearray))
                                                 for i in inputs):
        instances = [{"b64": base64.b64encode(bytes(i)).decode("ascii")} for i in inputs]
    else:
        instances = [x.tolist() if hasattr(x, "tolist") else x for x in inputs]
    return {"signature_name": signature_name, "instances": instances}


def _http_json(url, body=None, timeout=DEFAULT_TIMEOUT_S):
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        text = error.read().decode("utf-8", "replace")
        try:
            text = json.loads(text).get("error", text)
        except (ValueError, AttributeError):
            pass
        raise ServingError(f"{url} answered HTTP {error.code}: {' '.join(str(text).split())}") \
            from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ServingError(f"cannot reach TF Serving at {url} ({reason}); is "
                           "tensorflow_model_server running with --rest_api_port?") from None
    except ValueError as error:
        raise ServingError(f"{url} did not answer JSON ({error})") from None


class RestClient:
    """TF Serving's REST API for one model (and optionally one version)."""

    def __init__(self, server, model_name, version=None, timeout=DEFAULT_TIMEOUT_S):
        self.server, self.model_name, self.version = server, model_name, version
        self.timeout = float(timeout)
        parse_server(server)  # fail early on a malformed address

    def predict(self, request: dict) -> dict:
        return _http_json(rest_url(self.server, self.model_name, self.version), request,
                          self.timeout)

    def metadata(self) -> dict:
        return _http_json(rest_url(self.server, self.model_name, self.version, "metadata"),
                          None, self.timeout)


def parse_rest_predictions(response: dict) -> list:
    """[Prediction] from a row-format answer of ``serving_default`` / ``predict_bytes``."""
    if not isinstance(response, dict) or "predictions" not in response:
        raise ServingError(f"unexpected answer (no 'predictions'): {str(response)[:200]}")
    result = []
    for row in response["predictions"]:
        try:
            classes = [int(c) for c in row[sig.TOP_K_CLASSES]]
            names = row[sig.CLASS_NAMES]
            result.append(Prediction(classes, [float(s) for s in row[sig.TOP_K_SCORES]],
                                     [str(names[c]) for c in classes]))
        except (KeyError, TypeError, IndexError):
            raise ServingError("the answer lacks top_k_classes/top_k_scores/class_names: is "
                               "this a cskd-export model and a predict signature?") from None
    return result


# --------------------------------------------------------------------------- gRPC
def _serving_apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError:
        raise ServingError("--grpc needs the tensorflow-serving-api package: "
                           "pip install 'tensorflow-serving-api>=2.21,<2.22'") from None
    return predict_pb2, prediction_service_pb2_grpc


def tensor_proto(inputs):
    """A TensorProto of encoded images (DT_STRING, shape [n]) or of a numeric array."""
    import numpy as np
    import tensorflow as tf

    if isinstance(inputs, (list, tuple)) and all(isinstance(i, (bytes, bytearray))
                                                 for i in inputs):
        return tf.make_tensor_proto([bytes(i) for i in inputs], dtype=tf.string,
                                    shape=[len(inputs)])
    return tf.make_tensor_proto(np.asarray(inputs))


def grpc_request(model_name, inputs, signature_name=sig.PREDICT_BYTES, version=None,
                 output_filter=sig.CLIENT_OUTPUTS):
    """The PredictRequest for ``inputs`` (encoded images, or a uint8 array for images)."""
    predict_pb2, _ = _serving_apis()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    key = sig.IMAGE_BYTES if signature_name == sig.PREDICT_BYTES else sig.IMAGES
    request.inputs[key].CopyFrom(tensor_proto(inputs))
    request.output_filter.extend(output_filter or ())
    return request


class GrpcClient:
    """PredictionService/Predict on ``HOST:PORT`` over an insecure channel."""

    def __init__(self, server, timeout=DEFAULT_TIMEOUT_S):
        import grpc

        self._grpc = grpc
        target = parse_server(server).split("://", 1)[1]
        _, service = _serving_apis()
        self.timeout = float(timeout)
        # TF Serving's default max message is 4 MiB one way; allow large image batches back.
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)])
        self._stub = service.PredictionServiceStub(self._channel)
        self.target = target

    def predict(self, request):
        try:
            return self._stub.Predict(request, timeout=self.timeout)
        except self._grpc.RpcError as error:
            code = error.code().name if hasattr(error, "code") else "UNKNOWN"
            details = error.details() if hasattr(error, "details") else str(error)
            raise ServingError(f"gRPC Predict on {self.target} failed: {code}: "
                               f"{' '.join(str(details).split())}") from None

    def close(self):
        self._channel.close()


def parse_grpc_response(response) -> list:
    """[Prediction] from a PredictResponse holding the CLIENT_OUTPUTS."""
    import tensorflow as tf

    try:
        classes = tf.make_ndarray(response.outputs[sig.TOP_K_CLASSES])
        scores = tf.make_ndarray(response.outputs[sig.TOP_K_SCORES])
        names = tf.make_ndarray(response.outputs[sig.CLASS_NAMES])
    except (KeyError, ValueError, TypeError):
        raise ServingError("the answer lacks top_k_classes/top_k_scores/class_names: is this a "
                           "cskd-export model and a predict signature?") from None
    return [Prediction([int(c) for c in row_c], [float(s) for s in row_s],
                       [names[i][c].decode("utf-8") for c in row_c])
            for i, (row_c, row_s) in enumerate(zip(classes, scores))]


def format_predictions(labels, predictions, top=None) -> str:
    """One line per image: ``LABEL: NAME (0.9123), NAME (0.0412), ...``."""
    lines = []
    for label, p in zip(labels, predictions):
        ranked = list(zip(p.names, p.scores))[:top]
        lines.append(f"{label}: " + ", ".join(f"{n} ({s:.4f})" for n, s in ranked))
    return "\n".join(lines)
