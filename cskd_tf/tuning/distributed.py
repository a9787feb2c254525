"""Keras Tuner's distributed search (chief + workers) as cskd-tune uses it.

One process with ``KERASTUNER_TUNER_ID=chief`` holds the oracle and answers on
``KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT``; every other process, each with
its own ``KERASTUNER_TUNER_ID``, asks it for trials over gRPC and runs them.
All of them are started with the same cskd-tune command line (docs/tuning.md).

Only :func:`serve_chief` imports Keras Tuner, so :func:`role` can check the
environment before the slow imports.
"""

from __future__ import annotations

import os
import time

from cskd_tf.errors import ConfigError


def role() -> str:
    """'local', 'chief' or 'worker', from Keras Tuner's environment variables."""
    ip = os.environ.get("KERASTUNER_ORACLE_IP")
    if not ip:
        return "local"
    port = os.environ.get("KERASTUNER_ORACLE_PORT", "")
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    if not port.isdigit():
        raise ConfigError(f"KERASTUNER_ORACLE_IP is set but KERASTUNER_ORACLE_PORT={port!r} is not "
                          "a port number; set both (and KERASTUNER_TUNER_ID) on every process")
    if not tuner_id:
        raise ConfigError("KERASTUNER_ORACLE_IP is set but KERASTUNER_TUNER_ID is not; use "
                          "KERASTUNER_TUNER_ID=chief on the oracle and a unique id per worker")
    # Keras Tuner's own rule: any id containing "chief" is the oracle.
    return "chief" if "chief" in tuner_id else "worker"


def oracle_address() -> str:
    return f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"


def wait_for_chief(timeout_s: float):
    """ConfigError unless the chief answers within ``timeout_s``.

    Keras Tuner's client waits up to an hour for an absent chief on every call; checking
    right before the search turns a wrong address or a chief that already finished into
    a one-line error instead of a silent hang.
    """
    import grpc

    channel = grpc.insecure_channel(oracle_address())
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        raise ConfigError(f"no chief oracle answered at {oracle_address()} within {timeout_s:g}s; "
                          "start the chief (KERASTUNER_TUNER_ID=chief) first and check "
                          "KERASTUNER_ORACLE_IP/PORT (a finished search's chief has exited)"
                          ) from None
    finally:
        channel.close()


def serve_chief(tuner, poll_s: float = 0.5):
    """Runs the oracle server until every worker has been told the search is over.

    Keras Tuner's ``search()`` on the chief does the same but re-checks only every 20 s
    once the search is over; this loop checks every ``poll_s``.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    tuner.save()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(tuner.oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(oracle_address())
    except RuntimeError:
        bound = 0
    if not bound:
        raise ConfigError(f"the chief cannot listen on {oracle_address()} (port in use or not "
                          "an address of this machine); change KERASTUNER_ORACLE_PORT/IP")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(tuner.oracle)):
            time.sleep(poll_s)
    finally:
        server.stop(grace=None)
