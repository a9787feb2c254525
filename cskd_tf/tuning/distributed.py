"""Keras Tuner's distributed search (chief + workers) as cskd-tune uses it.

One process with ``KERASTUNER_TUNER_ID=chief`` holds the oracle and answers on
``KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT``; every other process, each with
its own ``KERASTUNER_TUNER_ID``, asks it for trials over gRPC and runs them.
All of them are started with the same cskd-tune command line (docs/tuning.md).

The chief runs Keras Tuner's own ``tuner.search()``, which serves the oracle
until every worker has been told the search is over (it re-checks every 20 s
once the last trial is handed out, so a chief may exit up to 20 s after its
last worker). Nothing here imports Keras Tuner, so :func:`role` can check the
environment before the slow imports.
"""

from __future__ import annotations

import os

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


def check_chief_address():
    """ConfigError unless the chief can listen on its address.

    Keras Tuner's chief (``tuner.search()`` with ``KERASTUNER_TUNER_ID=chief``) starts
    its gRPC server without checking that the port was bound: a port in use or an
    address of another machine would leave the chief waiting for workers that reach
    another process or nothing. Binding a plain socket first names the problem.
    """
    import socket

    host, port = os.environ["KERASTUNER_ORACLE_IP"], int(os.environ["KERASTUNER_ORACLE_PORT"])
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # Fails on a port another process listens on, not on connections of a chief
            # that just exited (TIME_WAIT), which a resumed chief must be able to reuse.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"the chief cannot listen on {oracle_address()} ({reason}); change "
                          "KERASTUNER_ORACLE_PORT, or KERASTUNER_ORACLE_IP to an address of "
                          "this machine") from None
