"""Deployment: export, the serving contract, REST/gRPC clients, evaluation of an export.

TF Serving itself cannot run here, so the contract is tested from both sides:

* the export is loaded with ``tf.saved_model.load`` and every signature is compared with
  the Keras model on the evaluation pipeline, and its metadata (names, dtypes, shapes)
  is read the way TF Serving's metadata endpoint reports it;
* the clients' requests are compared with TF Serving's documented payloads and sent to
  small stub servers on 127.0.0.1 (HTTP and gRPC) that answer through
  :class:`cskd_tf.serving.local.LocalServer`;
* ``test_tensorflow_model_server_end_to_end`` runs the real server when the binary is on
  PATH and is skipped otherwise.

One tiny digits run is trained and exported once per module (about 20 s on 2 cores).
"""

import base64
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from cskd_tf.errors import CSKDError, WorkdirError
from cskd_tf.serving import ServingError, client, loading, models_config
from cskd_tf.serving import signatures as sig
from cskd_tf.serving.loading import ExportedModel
from cskd_tf.serving.local import LocalServer, RequestError

MODEL = "digits"
CONFIG_FILE = os.path.join(os.path.dirname(__file__), "..", "configs", "digits_quick.py")
# The overrides the fixture trains with, as cskd-eval --config needs them.
TINY = {"model_width": 8, "max_train_per_class": 20, "num_epochs": 1, "batch_size": 32,
        "verbose": 0}
ATOL = 1e-5


def _png(array):
    import io

    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A finished tiny run, its export (version 1) and the Keras model it came from."""
    from cskd_tf.config import default_config
    from cskd_tf.serving.export import export_workdir
    from cskd_tf.training.restore import restore_from_workdir
    from cskd_tf.training.trainer import train

    root = tmp_path_factory.mktemp("serving")
    config = default_config()
    config.dataset = "digits"
    config.augment = "digits"
    config.learning_rate = 0.05
    for key, value in TINY.items():
        config[key] = value
    # float32: the tests hold the export to the eager Keras answers at 1e-5, which
    # bfloat16 ("auto" on a CPU with bfloat16 hardware) cannot meet, eager and traced
    # bfloat16 graphs being fused differently; test_precision.py exports a bfloat16 run.
    config.mixed_precision = "float32"
    workdir = str(root / "run")
    train(config, workdir)
    result = export_workdir(workdir, MODEL, export_base=str(root / "saved_models"))
    config, facts, model = restore_from_workdir(workdir)
    return {"root": root, "workdir": workdir, "export": result, "config": config,
            "facts": facts, "model": model, "local": LocalServer({MODEL: result.path})}


@pytest.fixture(scope="module")
def val_images(served):
    """uint8 val images + labels as evaluation decodes them, and the Keras answers."""
    from cskd_tf import data as data_lib
    from cskd_tf.serving.evaluate import uint8_batches

    info, splits = data_lib.prepare(served["config"])
    images, labels = map(np.concatenate, zip(*uint8_batches(splits["val"], 128)))
    model = served["model"]
    probs, feats = [], []
    for x, _ in data_lib.eval_dataset(served["config"], info, splits["val"]):
        probs.append(tf.nn.softmax(model(x, training=False)).numpy())
        feats.append(model.embed(x, training=False).numpy())
    return images, labels, np.concatenate(probs), np.concatenate(feats)


def _one_line_error(proc):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[-1]


def _cli(module, *args, timeout=240):
    # `python -m` runs the same main() as the console scripts cskd-export / cskd-predict.
    return subprocess.run([sys.executable, "-m", f"cskd_tf.cli.{module}", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------- export
def test_export_layout_assets_and_models_config(served):
    result = served["export"]
    base = os.path.dirname(os.path.dirname(result.path))
    assert result.version == 1 and result.path == os.path.join(base, MODEL, "1")
    for name in ("saved_model.pb", "variables/variables.index", "assets/labels.txt",
                 "assets/config.json", "assets/cskd_export.json"):
        assert os.path.exists(os.path.join(result.path, name)), name
    assert os.listdir(os.path.join(base, MODEL)) == ["1"]  # no staging folder left behind
    assert open(os.path.join(result.path, "assets/labels.txt")).read().split() == \
        [str(d) for d in range(10)]
    manifest = json.load(open(os.path.join(result.path, "assets/cskd_export.json")))
    assert manifest["preprocessing"]["augment"] == "digits"
    assert manifest["preprocessing"]["image_shape"] == [8, 8, 1]
    assert manifest["metrics"] == json.load(open(os.path.join(served["workdir"], "metrics.json")))

    # The config file is what tensorflow_model_server parses: check it with the real proto.
    from google.protobuf import text_format
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig
    parsed = text_format.Parse(open(result.models_config).read(), ModelServerConfig())
    (entry,) = parsed.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == \
        (MODEL, os.path.join(base, MODEL), "tensorflow")
    assert list(entry.model_version_policy.specific.versions) == [1]


def test_export_refuses_overwrite_unfinished_runs_and_bad_names(served, tmp_path):
    from cskd_tf.serving.export import export_workdir, next_version

    base = os.path.dirname(os.path.dirname(served["export"].path))
    with pytest.raises(ServingError, match="already exists.*next free one \\(2\\)"):
        export_workdir(served["workdir"], MODEL, export_base=base, version=1)
    assert next_version(os.path.join(base, MODEL)) == 2
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(WorkdirError, match="no finished model"):
        export_workdir(str(tmp_path / "half"), MODEL, export_base=str(tmp_path / "sm"))
    with pytest.raises(ServingError, match="model name"):
        export_workdir(served["workdir"], "../evil", export_base=str(tmp_path / "sm"))
    # An --export_base that is a file (or lies below one) is refused before anything is
    # written, and the file is kept.
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    for base in (taken, taken / "sm"):
        with pytest.raises(ServingError, match=f"{taken} is a file, not a folder; pass "
                                               "--export_base=DIR"):
            export_workdir(served["workdir"], MODEL, export_base=str(base))
    assert taken.read_text() == "keep me"


def test_export_prints_one_line_per_step(served, tmp_path, capsys):
    from cskd_tf.serving.export import export_workdir

    export_workdir(served["workdir"], MODEL, export_base=str(tmp_path), verify=False)
    lines = capsys.readouterr().err.splitlines()
    steps = [line.split("] ")[0] for line in lines if line.startswith(f"cskd-export {MODEL}/1 [")]
    assert steps == [f"cskd-export {MODEL}/1 [{i}/3" for i in (1, 2, 3)], lines
    assert "published" in lines[-1] and lines[-1].endswith("s)"), lines


def test_models_config_update_keeps_other_models_and_policies(tmp_path):
    base = str(tmp_path)
    models_config.update(base, "a", "/models/a", 2)
    models_config.update(base, "a", "/models/a", 1)
    models_config.update(base, "b", "/models/b", 1, policy="all")
    models_config.update(base, "b", "/models/b", 2)  # keeps "all"
    models_config.update(base, "c", "/models/c", 1, policy="latest")
    config = models_config.read(os.path.join(base, models_config.CONFIG_NAME))
    assert models_config.served_versions(config, "a") == [1, 2]
    policies = [e.model_version_policy.WhichOneof("policy_choice")
                for e in config.model_config_list.config]
    assert policies == ["specific", "all", "latest"]
    assert os.listdir(base) == [models_config.CONFIG_NAME]  # no lock or temp file left


# Written by hand the way TF Serving's docs show: fields cskd-export does not manage.
HAND_WRITTEN = """
# comments are allowed
model_config_list {
  config {
    name: "resnet"
    base_path: "/models/resnet"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 3 versions: 7 } }
    version_labels { key: "stable" value: 3 }
    version_labels { key: "canary" value: 7 }
    logging_config {
      sampling_config { sampling_rate: 0.25 }
      log_collector_config { type: "file" filename_prefix: "/logs/resnet" }
    }
  }
  config {
    name: "old_style"
    base_path: "/models/old"
    model_type: TENSORFLOW
    model_version_policy { latest { num_versions: 2 } }
  }
  config {
    name: "digits"
    base_path: "/elsewhere/digits"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 } }
    version_labels { key: "stable" value: 1 }
  }
}
"""


def test_models_config_round_trips_a_hand_written_file(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

    path = tmp_path / models_config.CONFIG_NAME
    path.write_text(HAND_WRITTEN)
    original = text_format.Parse(HAND_WRITTEN, ModelServerConfig())
    models_config.update(str(tmp_path), "digits", "/models/digits", 2)
    models_config.update(str(tmp_path), "new", "/models/new", 1)
    after = models_config.read(str(path))

    entries = {e.name: e for e in after.model_config_list.config}
    assert list(entries) == ["resnet", "old_style", "digits", "new"]
    # Other models: every field exactly as written (labels, logging, deprecated model_type).
    for before in original.model_config_list.config[:2]:
        assert entries[before.name] == before, before.name
    assert entries["old_style"].model_type == 1 and not entries["old_style"].model_platform
    # Ours: the new version and base path; its own version label is kept too.
    digits = entries["digits"]
    assert digits.base_path == "/models/digits"
    assert list(digits.model_version_policy.specific.versions) == [1, 2]
    assert dict(digits.version_labels) == {"stable": 1}
    assert list(entries["new"].model_version_policy.specific.versions) == [1]
    # What was written is what TF Serving's own parser reads.
    assert text_format.Parse(path.read_text(), ModelServerConfig()) == after


@pytest.mark.parametrize("text, problem", [
    ("model_config_list { config { name: 'x' base_pth: '/m' } }", "no field named \"base_pth\""),
    ("model_config_list { config { name: 'x' }", "1:"),
    ("custom_model_config { }", "custom_model_config"),
])
def test_models_config_malformed_file_is_a_one_line_error(tmp_path, text, problem):
    path = tmp_path / models_config.CONFIG_NAME
    path.write_text(text)
    with pytest.raises(ServingError) as caught:
        models_config.update(str(tmp_path), "a", "/models/a", 1)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and problem in message, message
    assert "fix it by hand" in message
    assert path.read_text() == text  # refused, not rewritten


# ------------------------------------------------------------------ serving contract
def test_signature_metadata_as_tf_serving_reports_it(served):
    metadata = loading.signature_metadata(served["export"].path)
    defs = metadata["signature_def"]
    assert {sig.SERVING_DEFAULT, sig.PREDICT_BYTES, sig.EMBED} <= set(defs)
    k, classes, width = 5, 10, served["model"].embed(np.zeros((1, 8, 8, 1), "float32")).shape[-1]
    predict = {"probabilities": ("DT_FLOAT", [-1, classes]), "logits": ("DT_FLOAT", [-1, classes]),
               "top_k_classes": ("DT_INT32", [-1, k]), "top_k_scores": ("DT_FLOAT", [-1, k]),
               "class_names": ("DT_STRING", [-1, classes])}
    images = {"images": ("DT_UINT8", [-1, -1, -1, 1])}
    expected = {
        sig.SERVING_DEFAULT: {"inputs": images, "outputs": predict},
        sig.PREDICT_BYTES: {"inputs": {"image_bytes": ("DT_STRING", [-1])}, "outputs": predict},
        sig.EMBED: {"inputs": images, "outputs": {"embeddings": ("DT_FLOAT", [-1, width])}},
    }
    for name, want in expected.items():
        assert loading.tensor_summary(metadata, name) == want, name
        assert defs[name]["method_name"] == "tensorflow/serving/predict"
    # The metadata JSON is what /v1/models/NAME/metadata puts under "metadata".
    answer = served["local"].metadata(MODEL)
    assert answer["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    assert answer["metadata"]["signature_def"] == metadata


def test_signatures_match_keras_model_on_eval_pipeline(served, val_images):
    images, labels, keras_probs, keras_feats = val_images
    exported = served["local"].model(MODEL)[1]
    out = exported.signature(sig.SERVING_DEFAULT)(images=tf.constant(images))
    probs = out["probabilities"].numpy()
    assert probs.shape == keras_probs.shape == (len(labels), 10)
    assert np.max(np.abs(probs - keras_probs)) <= ATOL
    np.testing.assert_allclose(tf.nn.softmax(out["logits"]).numpy(), probs, atol=ATOL)
    top = out["top_k_classes"].numpy()
    assert top.dtype == np.int32 and top.shape == (len(labels), 5)
    np.testing.assert_array_equal(top[:, 0], np.argmax(probs, axis=1))
    np.testing.assert_allclose(out["top_k_scores"].numpy(),
                               np.take_along_axis(probs, top, axis=1), atol=1e-7)
    assert out["class_names"].numpy()[0].tolist() == [str(d).encode() for d in range(10)]

    feats = exported.signature(sig.EMBED)(images=tf.constant(images))["embeddings"].numpy()
    assert np.max(np.abs(feats - keras_feats)) <= ATOL

    # Encoded files (some enlarged: the graph resizes them back) give the same answers.
    chosen = np.arange(0, len(labels), 37)
    files = [_png(images[i]) for i in chosen]
    big = np.repeat(np.repeat(images[chosen[0]], 3, axis=0), 3, axis=1)  # 24x24 input
    by_bytes = exported.signature(sig.PREDICT_BYTES)(image_bytes=tf.constant(files + [_png(big)]))
    np.testing.assert_allclose(by_bytes["probabilities"].numpy()[:-1], keras_probs[chosen],
                               atol=ATOL)
    direct = exported.signature(sig.SERVING_DEFAULT)(images=tf.constant(big[None]))
    np.testing.assert_allclose(by_bytes["probabilities"].numpy()[-1],
                               direct["probabilities"].numpy()[0], atol=ATOL)


def test_signatures_reject_wrong_dtype_rank_channels_and_bytes(served):
    exported = served["local"].model(MODEL)[1]
    serve = exported.signature(sig.SERVING_DEFAULT)
    for bad in (tf.zeros((1, 8, 8, 1), tf.float32),  # dtype
                tf.zeros((8, 8, 1), tf.uint8),  # rank
                tf.zeros((1, 8, 8, 3), tf.uint8)):  # channels
        with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
            serve(images=bad)
    with pytest.raises(tf.errors.InvalidArgumentError):
        exported.signature(sig.PREDICT_BYTES)(image_bytes=tf.constant([b"not an image"]))
    # Through the TF Serving emulation the same requests are HTTP 400 answers.
    with pytest.raises(RequestError) as caught:
        served["local"].predict(MODEL, {"signature_name": "predict_bytes",
                                        "instances": [{"b64": base64.b64encode(b"x").decode()}]})
    assert caught.value.status == 400
    with pytest.raises(RequestError) as caught:
        served["local"].predict(MODEL, {"instances": [[[0.5]]]})
    assert caught.value.status == 400
    with pytest.raises(RequestError) as caught:
        served["local"].predict(MODEL, {"signature_name": "nope", "instances": [1]})
    assert caught.value.status == 404


def test_evaluating_the_export_alone_gives_the_keras_metrics(served):
    from cskd_tf.serving.evaluate import evaluate_export

    exported = served["local"].model(MODEL)[1]
    metrics = evaluate_export(exported, exported.training_config())
    keras_metrics = json.load(open(os.path.join(served["workdir"], "metrics.json")))
    assert set(metrics) == set(keras_metrics) == {"val", "test"}
    for split, values in keras_metrics.items():
        assert metrics[split]["num_examples"] == values["num_examples"]
        for key in ("top1_error", "top5_error", "recall_at_1"):
            assert metrics[split][key] == pytest.approx(values[key], abs=1e-9), (split, key)
        for key in ("ece", "nll"):
            assert metrics[split][key] == pytest.approx(values[key], abs=1e-4), (split, key)


# ---------------------------------------------------------------------------- clients
def test_rest_payloads_are_tf_servings_row_format():
    files = [b"\x89PNG fake", b"\xff\xd8 jpeg"]
    assert client.rest_request(files) == {
        "signature_name": "predict_bytes",
        "instances": [{"b64": base64.b64encode(f).decode("ascii")} for f in files]}
    batch = np.arange(8, dtype=np.uint8).reshape(2, 2, 2, 1)
    assert client.rest_request(batch, "serving_default") == {
        "signature_name": "serving_default",
        "instances": [[[[0], [1]], [[2], [3]]], [[[4], [5]], [[6], [7]]]]}
    assert client.rest_url("localhost:8501", "m") == "http://localhost:8501/v1/models/m:predict"
    assert client.rest_url("h:1", "m", 3) == "http://h:1/v1/models/m/versions/3:predict"
    assert client.rest_url("h:1", "m", 3, "metadata") == \
        "http://h:1/v1/models/m/versions/3/metadata"
    with pytest.raises(ServingError, match="HOST:PORT"):
        client.parse_server("localhost")


def test_grpc_request_is_tf_servings_predict_request():
    predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    from google.protobuf import text_format

    request = client.grpc_request(MODEL, [b"abc", b"\x00\xff"], version=4)
    expected = text_format.Parse("""
        model_spec { name: "digits" signature_name: "predict_bytes" version { value: 4 } }
        inputs { key: "image_bytes" value { dtype: DT_STRING tensor_shape { dim { size: 2 } }
                                            string_val: "abc" string_val: "\\000\\377" } }
        output_filter: "top_k_classes" output_filter: "top_k_scores" output_filter: "class_names"
        """, predict_pb2.PredictRequest())
    assert request == expected
    assert predict_pb2.PredictRequest.FromString(request.SerializeToString()) == expected
    unversioned = client.grpc_request(MODEL, np.zeros((1, 8, 8, 1), np.uint8), "serving_default")
    assert not unversioned.model_spec.HasField("version")
    tensor = unversioned.inputs["images"]
    assert tensor.dtype == tf.uint8.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [1, 8, 8, 1]


class _StubHandler(http.server.BaseHTTPRequestHandler):
    """Answers like TF Serving's REST API, through LocalServer."""

    local = None

    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self):
        parts = self.path.split("/")  # /v1/models/NAME[/versions/N]:predict
        name = parts[3].split(":")[0].split("?")[0]
        version = int(parts[5].split(":")[0].split("/")[0]) if len(parts) > 5 else None
        return name, version

    def do_POST(self):
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            name, version = self._route()
            self._answer(200, self.local.predict(name, body, version))
        except RequestError as error:
            self._answer(error.status, {"error": str(error)})

    def do_GET(self):
        try:
            name, version = self._route()
            self._answer(200, self.local.metadata(name, version))
        except RequestError as error:
            self._answer(error.status, {"error": str(error)})

    def log_message(self, *args):
        pass


def _image_files(tmp_path, images, count=4):
    paths = []
    for i in range(count):
        path = tmp_path / f"img{i}.png"
        path.write_bytes(_png(images[i * 50]))
        paths.append(str(path))
    return paths


def test_rest_client_against_a_stub_tf_serving(served, val_images, tmp_path):
    images, _, keras_probs, _ = val_images
    paths = _image_files(tmp_path, images)
    handler = type("Handler", (_StubHandler,), {"local": served["local"]})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        rest = client.RestClient(address, MODEL, version=1, timeout=20)
        answer = rest.predict(client.rest_request([open(p, "rb").read() for p in paths]))
        rows = answer["predictions"]
        assert len(rows) == 4 and set(rows[0]) == set(sig.PREDICT_OUTPUTS)
        np.testing.assert_allclose(np.array([r["probabilities"] for r in rows]),
                                   keras_probs[[0, 50, 100, 150]], atol=ATOL)
        parsed = client.parse_rest_predictions(answer)
        assert parsed[0].classes == rows[0]["top_k_classes"]
        assert parsed[0].names == [str(c) for c in rows[0]["top_k_classes"]]
        metadata = rest.metadata()
        assert metadata["model_spec"]["version"] == "1"
        assert sig.PREDICT_BYTES in metadata["metadata"]["signature_def"]["signature_def"]
        # Server-side errors come back as one-line ServingErrors with the HTTP status.
        with pytest.raises(ServingError, match="HTTP 404: Servable not found"):
            client.RestClient(address, "other", timeout=20).predict(client.rest_request([b"x"]))
        with pytest.raises(ServingError, match="HTTP 400"):
            rest.predict(client.rest_request([b"not an image"]))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_grpc_client_against_a_stub_prediction_service(served, val_images, tmp_path):
    grpc = pytest.importorskip("grpc")
    service = pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc")
    from concurrent import futures

    local = served["local"]

    class Servicer(service.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (gRPC method name)
            try:
                return local.predict_proto(request)
            except RequestError as error:
                code = grpc.StatusCode.NOT_FOUND if error.status == 404 else \
                    grpc.StatusCode.INVALID_ARGUMENT
                context.abort(code, str(error))

    images, _, keras_probs, _ = val_images
    paths = _image_files(tmp_path, images)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stub = None
    try:
        stub = client.GrpcClient(f"127.0.0.1:{port}", timeout=20)
        request = client.grpc_request(MODEL, [client.read_image(p) for p in paths], version=1)
        response = stub.predict(request)
        assert set(response.outputs) == set(sig.CLIENT_OUTPUTS)
        assert response.model_spec.version.value == 1
        parsed = client.parse_grpc_response(response)
        top1 = [p.classes[0] for p in parsed]
        assert top1 == list(np.argmax(keras_probs[[0, 50, 100, 150]], axis=1))
        np.testing.assert_allclose([p.scores[0] for p in parsed],
                                   np.max(keras_probs[[0, 50, 100, 150]], axis=1), atol=ATOL)
        with pytest.raises(ServingError, match="INVALID_ARGUMENT"):
            stub.predict(client.grpc_request(MODEL, [b"not an image"]))
    finally:
        if stub is not None:
            stub.close()
        server.stop(grace=None).wait(10)


def test_read_image_checks_and_converts(tmp_path):
    from PIL import Image

    webp = tmp_path / "x.webp"
    Image.fromarray(np.full((5, 7, 3), 200, np.uint8)).save(webp)
    data = client.read_image(str(webp))
    assert data.startswith(b"\x89PNG")  # re-encoded: the graph decodes no WebP
    png = tmp_path / "x.png"
    png.write_bytes(_png(np.zeros((4, 4, 1), np.uint8)))
    assert client.read_image(str(png)) == png.read_bytes()  # sent as is
    truncated = tmp_path / "t.png"
    truncated.write_bytes(png.read_bytes()[:40])
    for bad in (truncated, tmp_path / "missing.png"):
        with pytest.raises(ServingError, match="cannot (read|decode) image"):
            client.read_image(str(bad))


# ------------------------------------------------------------------------------- CLIs
@pytest.mark.cli
def test_cli_predict_local_and_eval_export(served, val_images, tmp_path):
    images = val_images[0]
    paths = _image_files(tmp_path, images, count=2)
    export = served["export"].path
    proc = _cli("predict", f"--saved_model={export}", "--json", *paths)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = json.loads(proc.stdout)
    expected = client.parse_rest_predictions(
        served["local"].predict(MODEL, client.rest_request([open(p, "rb").read() for p in paths])))
    assert [a["top_k"][0]["class"] for a in answers] == [e.classes[0] for e in expected]
    assert [a["image"] for a in answers] == paths

    proc = _cli("eval", f"--saved_model={export}", f"--config={CONFIG_FILE}", "--split=test",
                *[f"--config.{k}={v}" for k, v in TINY.items()])
    assert proc.returncode == 0, proc.stderr[-2000:]
    keras_metrics = json.load(open(os.path.join(served["workdir"], "metrics.json")))
    assert json.loads(proc.stdout)["test"]["top1_error"] == pytest.approx(
        keras_metrics["test"]["top1_error"])
    # Progress on stderr, so stdout stays the metrics JSON alone.
    assert "evaluating the export on test: 360 images in" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.cli
def test_cli_bad_input_is_one_line_error(served, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    assert "cannot decode image" in _one_line_error(
        _cli("predict", f"--saved_model={served['export'].path}", bad))
    # In process (each CLI start imports TensorFlow): the same CSKDError the CLI prints.
    with pytest.raises(CSKDError, match="is not a SavedModel: it has no saved_model.pb"):
        LocalServer({MODEL: str(tmp_path)}).model(MODEL)
    with pytest.raises(CSKDError, match="holds versions 1: pass"):
        ExportedModel(os.path.dirname(served["export"].path))
    assert "no finished model" in _one_line_error(
        _cli("export", f"--workdir={tmp_path}", f"--model_name={MODEL}",
             f"--export_base={tmp_path / 'sm'}"))
    image = tmp_path / "ok.png"
    image.write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    assert "--top must be >= 1 (got 0)" in _one_line_error(
        _cli("predict", f"--saved_model={served['export'].path}", "--top=0", image))


# ------------------------------------------------------------------ real TF Serving
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH (install the "
                           "tensorflow-model-server apt package or use the tensorflow/serving "
                           "Docker image; see docs/serving.md)")
@pytest.mark.slow
@pytest.mark.cli
def test_tensorflow_model_server_end_to_end(served, val_images, tmp_path):
    grpc_port, rest_port = _free_port(), _free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        ["tensorflow_model_server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         "--rest_api_timeout_in_ms=30000",
         f"--model_config_file={served['export'].models_config}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        status_url = f"http://127.0.0.1:{rest_port}/v1/models/{MODEL}"
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, open(tmp_path / "server.log").read()[-3000:]
            try:
                with urllib.request.urlopen(status_url, timeout=5) as reply:
                    states = [v["state"] for v in json.load(reply)["model_version_status"]]
                if "AVAILABLE" in states:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "the server did not load the model in 90 s"
            time.sleep(0.5)

        images, _, keras_probs, _ = val_images
        files = [_png(images[i]) for i in (0, 50)]
        rest = client.RestClient(f"127.0.0.1:{rest_port}", MODEL, version=1)
        answer = rest.predict(client.rest_request(files))
        np.testing.assert_allclose([r["probabilities"] for r in answer["predictions"]],
                                   keras_probs[[0, 50]], atol=ATOL)
        assert rest.metadata()["metadata"]["signature_def"]["signature_def"][sig.EMBED] == \
            served["local"].metadata(MODEL)["metadata"]["signature_def"]["signature_def"][sig.EMBED]
        uint8 = rest.predict(client.rest_request(images[:2], "serving_default"))
        np.testing.assert_allclose([r["probabilities"] for r in uint8["predictions"]],
                                   keras_probs[:2], atol=ATOL)

        try:
            import tensorflow_serving.apis.predict_pb2  # noqa: F401
        except ImportError:  # the REST half above still ran
            return
        else:
            stub = client.GrpcClient(f"127.0.0.1:{grpc_port}")
            try:
                parsed = client.parse_grpc_response(stub.predict(
                    client.grpc_request(MODEL, files, version=1)))
            finally:
                stub.close()
            assert [p.classes[0] for p in parsed] == list(np.argmax(keras_probs[[0, 50]], 1))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


# ------------------------------------------------------------- serving from Python
@pytest.fixture(scope="module")
def python_model(tmp_path_factory):
    """A CSKDModel trained from Python on 0..255 float images (as Keras' image loaders
    give them), saved as a .keras file outside any cskd-train run folder."""
    import keras

    from cskd_tf import losses
    from cskd_tf.config import default_config
    from cskd_tf.data import pairs_from_dataset
    from cskd_tf.models import CSKDModel

    root = tmp_path_factory.mktemp("python_model")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(40) % 10
    ds = tf.data.Dataset.from_tensor_slices((images.astype("float32"), labels)).batch(16)
    pairs = pairs_from_dataset(ds, batch_size=16, seed=0, cache_dir=str(root / "cache"))
    assert pairs.pixel_max == 255.0
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    names = [f"digit{i}" for i in range(10)]
    model = CSKDModel(net, method=losses.get_method("cskd", default_config()), mean=pairs.mean,
                      std=pairs.std, class_names=names, pixel_max=pairs.pixel_max)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    model.fit(pairs, epochs=1, verbose=0)
    keras_file = root / "alone" / "model.keras"
    keras_file.parent.mkdir()
    model.save(str(keras_file))
    return {"root": root, "model": model, "images": images, "names": names,
            "keras_file": str(keras_file)}


def _served_answers(path, images):
    loaded = tf.saved_model.load(str(path))
    return loaded.signatures[sig.SERVING_DEFAULT](images=tf.constant(images))


def test_model_export_from_python_serves_what_predict_answers(python_model, tmp_path):
    model, images = python_model["model"], python_model["images"]
    path = tmp_path / "exported"
    model.export(str(path), verbose=False)
    # The same signatures, with the same tensors, as cskd-export writes.
    found = loading.signature_metadata(str(path))
    for name, expected in sig.contract(10, 1, 4, 5).items():
        want = {side: {t: (d, list(s)) for t, (d, s) in spec.items()}
                for side, spec in expected.items()}
        assert loading.tensor_summary(found, name) == want
    loaded = tf.saved_model.load(str(path))
    served = loaded.signatures[sig.SERVING_DEFAULT](images=tf.constant(images))
    # The model takes 0..255 floats (pixel_max=255): uint8 pixels go in at their values.
    expected = tf.nn.softmax(model.predict(images.astype("float32"), verbose=0)).numpy()
    np.testing.assert_allclose(served[sig.PROBABILITIES].numpy(), expected, atol=1e-5)
    assert served[sig.CLASS_NAMES].numpy()[0].astype(str).tolist() == python_model["names"]
    embedded = loaded.signatures[sig.EMBED](images=tf.constant(images))[sig.EMBEDDINGS]
    np.testing.assert_allclose(embedded.numpy(), model.embed(images.astype("float32")).numpy(),
                               atol=1e-5)
    encoded = tf.constant([_png(x) for x in images[:3]])
    from_bytes = loaded.signatures[sig.PREDICT_BYTES](image_bytes=encoded)
    np.testing.assert_allclose(from_bytes[sig.PROBABILITIES].numpy(), expected[:3], atol=1e-5)
    manifest = json.load(open(path / "assets" / loading.MANIFEST))
    assert manifest["class_names"] == python_model["names"]
    assert manifest["preprocessing"]["pixel_max"] == 255.0
    assert open(path / "assets" / loading.LABELS).read().split() == python_model["names"]


def test_model_export_asks_for_the_pixel_range(python_model, tmp_path):
    import keras

    from cskd_tf import losses
    from cskd_tf.config import default_config
    from cskd_tf.errors import ModelError
    from cskd_tf.models import CSKDModel

    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(3)])
    model = CSKDModel(net, method=losses.get_method("cskd", default_config()))
    with pytest.raises(ModelError, match=r"pixel_max=255.0\) for 0..255 inputs"):
        model.export(str(tmp_path / "a"), verbose=False)
    with pytest.raises(ModelError, match="2 class names for a model with 3 outputs"):
        model.export(str(tmp_path / "b"), pixel_max=1.0, class_names=["x", "y"], verbose=False)
    model.export(str(tmp_path / "c"), pixel_max=1.0, verbose=False)  # names default to 0..2
    rows = _served_answers(tmp_path / "c", np.zeros((1, 8, 8, 1), np.uint8))[sig.CLASS_NAMES]
    assert rows.numpy()[0].astype(str).tolist() == ["0", "1", "2"]
    # The serving facts survive model.save / load_model (get_config).
    model.save(str(tmp_path / "m.keras"))
    restored = keras.models.load_model(str(tmp_path / "m.keras"))
    assert restored.pixel_max is None and restored.class_names is None
    assert keras.models.load_model(python_model["keras_file"]).class_names == tuple(
        python_model["names"])


@pytest.mark.cli
def test_cli_export_predict_eval_a_standalone_keras_file(python_model, tmp_path):
    keras_file, images = python_model["keras_file"], python_model["images"]
    proc = _cli("export", f"--workdir={keras_file}", "--model_name=mine",
                f"--export_base={tmp_path / 'sm'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    exported = json.loads(proc.stdout)["path"]
    expected = tf.nn.softmax(python_model["model"].predict(images.astype("float32"),
                                                           verbose=0)).numpy()
    np.testing.assert_allclose(_served_answers(exported, images)[sig.PROBABILITIES].numpy(),
                               expected, atol=1e-5)
    manifest = json.load(open(os.path.join(exported, "assets", loading.MANIFEST)))
    assert manifest["source_keras_file"] == os.path.abspath(keras_file)

    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"img{i}.png"))
        open(paths[-1], "wb").write(_png(images[i]))
    proc = _cli("predict", f"--saved_model={keras_file}", "--json", *paths)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = json.loads(proc.stdout)
    best = [int(i) for i in expected[:2].argmax(-1)]
    assert [a["top_k"][0]["class"] for a in answers] == best
    assert [a["top_k"][0]["name"] for a in answers] == [python_model["names"][i] for i in best]

    assert "pass --config=configs/NAME.py" in _one_line_error(
        _cli("eval", f"--workdir={keras_file}"))
    overrides = [f"--config.{k}={v}" for k, v in TINY.items()]
    proc = _cli("eval", f"--workdir={keras_file}", f"--config={CONFIG_FILE}", "--split=test",
                *overrides)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import runpy

    from cskd_tf import data as data_lib
    from cskd_tf.evaluation.metrics import evaluate_predictions

    config = runpy.run_path(CONFIG_FILE)["get_config"]()
    for key, value in TINY.items():
        config[key] = value
    info, splits = data_lib.prepare(config)
    logits, labels = [], []
    for x, y in data_lib.eval_dataset(config, info, splits["test"]):
        logits.append(python_model["model"].predict(x * 255.0, verbose=0))
        labels.append(y.numpy())
    direct = evaluate_predictions(np.concatenate(logits), np.concatenate(labels))
    assert json.loads(proc.stdout)["test"]["nll"] == pytest.approx(direct["nll"], abs=1e-4)
