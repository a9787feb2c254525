"""cskd-predict: classify image files with a served (or local) cskd-export model.

    cskd-predict --server=HOST:PORT --model_name=NAME [--version=N] [--grpc] IMAGE...
    cskd-predict --saved_model=saved_models/NAME/N|MODEL.keras [--grpc] IMAGE...

REST (TF Serving's --rest_api_port, 8501 by default) unless --grpc (--port, 8500; needs
tensorflow-serving-api). The images go as encoded files to the predict_bytes signature.
With --saved_model the same request is executed in this process, as a server would; a
.keras file (a cskd-train run's model.keras, or a CSKDModel saved from Python) is exported
to a temporary folder first, exactly as cskd-export would write it.
Prints one line per image, ``IMAGE: NAME (score), ...``, or JSON with --json.
"""

from __future__ import annotations

import json

from cskd_tf.cli import common  # sets TF_CPP_MIN_LOG_LEVEL first

from absl import flags

flags.DEFINE_string("server", None, "TF Serving address HOST:PORT (REST, or gRPC with --grpc).")
flags.DEFINE_string("model_name", None, "Model name on the server (models.config name).")
flags.DEFINE_integer("version", None, "Model version; default: what the server serves as latest.")
flags.DEFINE_bool("grpc", False, "Use the gRPC PredictionService instead of REST.")
flags.DEFINE_string("saved_model", None, "Run the request locally on this export "
                    "(saved_models/NAME/N), or on a .keras file, instead of a server.")
flags.DEFINE_integer("top", None, "Print at most this many classes per image (default: all "
                     "top-k the model reports).")
flags.DEFINE_integer("batch_size", 32, "Images per request.")
flags.DEFINE_float("timeout", 30.0, "Seconds to wait for each answer.")
flags.DEFINE_bool("json", False, "Print JSON instead of one line per image.")
FLAGS = flags.FLAGS


def _chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _as_saved_model(path):
    """``path``, or for a .keras file its export into a temporary folder (what a server
    would load: the same signatures, preprocessing included)."""
    if not str(path).endswith(".keras"):
        return path
    import atexit
    import shutil
    import tempfile

    from cskd_tf.serving.export import export_workdir

    base = tempfile.mkdtemp(prefix="cskd-predict-")
    atexit.register(shutil.rmtree, base, True)
    return export_workdir(path, "local", export_base=base, verify=False, verbose=0).path


def main(argv):
    from cskd_tf.errors import ConfigError
    from cskd_tf.serving import client
    from cskd_tf.serving import signatures as sig

    paths = list(argv[1:])
    if not paths:
        raise ConfigError("no images given; pass one or more IMAGE files after the flags")
    if FLAGS.batch_size < 1:
        raise ConfigError(f"--batch_size must be >= 1 (got {FLAGS.batch_size})")
    if FLAGS.top is not None and FLAGS.top < 1:
        raise ConfigError(f"--top must be >= 1 (got {FLAGS.top}); omit it to print every "
                          "class the model reports")
    if bool(FLAGS.saved_model) == bool(FLAGS.server):
        raise ConfigError("pass either --server=HOST:PORT (a running TF Serving) or "
                          "--saved_model=saved_models/NAME/N (local)")
    # Every file is read and checked before anything is sent.
    images = [client.read_image(p) for p in paths]

    if FLAGS.saved_model:
        from cskd_tf.serving.local import LocalServer

        name = FLAGS.model_name or "local"
        local = LocalServer({name: _as_saved_model(FLAGS.saved_model)})
        version = None

        def send_rest(request):
            return local.predict(name, request, version)

        def send_grpc(request):
            return local.predict_proto(request)
    else:
        if not FLAGS.model_name:
            raise ConfigError("--model_name is required with --server")
        name, version = FLAGS.model_name, FLAGS.version
        if FLAGS.grpc:
            grpc_client = client.GrpcClient(FLAGS.server, timeout=FLAGS.timeout)
            send_grpc = grpc_client.predict
        else:
            rest_client = client.RestClient(FLAGS.server, name, version, timeout=FLAGS.timeout)
            send_rest = rest_client.predict

    predictions = []
    for batch in _chunks(images, FLAGS.batch_size):
        if FLAGS.grpc:
            request = client.grpc_request(name, batch, sig.PREDICT_BYTES, version)
            predictions += client.parse_grpc_response(send_grpc(request))
        else:
            request = client.rest_request(batch, sig.PREDICT_BYTES)
            predictions += client.parse_rest_predictions(send_rest(request))

    if FLAGS.json:
        print(json.dumps([{"image": p, **pred.as_dict()} for p, pred in zip(paths, predictions)],
                         indent=2))
    else:
        print(client.format_predictions(paths, predictions, FLAGS.top))


def run():
    common.run(main)


if __name__ == "__main__":
    run()
