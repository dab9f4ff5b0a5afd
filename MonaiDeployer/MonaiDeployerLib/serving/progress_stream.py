"""A run's stage and fraction as the server's decoupled ``PROGRESS`` model streams them over gRPC, where this Python
has ``tritonclient[grpc]`` and reaches the server's gRPC port. ``RemoteRequest`` asks over HTTP where it cannot."""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import numpy as np

from . import v2
from .in_flight import STREAM_IDLE_SECONDS

SILENT_SECONDS = 3 * STREAM_IDLE_SECONDS  # a stream that sends nothing for this long is given up
STOP_CHECK_SECONDS = 0.25


def follow_run(address: str, run_id: str, on_state, stop: threading.Event) -> bool:
    """Call ``on_state(state)`` for each state of the run ``run_id`` the server at ``address`` (``host:port``)
    streams, until its last or until ``stop`` is set. True when the stream followed the run to its end (or to
    ``stop``); False when gRPC is not to be had here, or the stream ended before the run did."""
    try:
        import tritonclient.grpc as grpc_client
    except ImportError:
        return False
    states = queue.Queue()
    client = None
    try:
        client = grpc_client.InferenceServerClient(address)
        client.start_stream(callback=lambda result, error: states.put(error or v2.json_of(result.as_numpy(v2.RESULT))))
        run_id_input = grpc_client.InferInput(v2.RUN_ID, [1], "BYTES")
        run_id_input.set_data_from_numpy(np.array([run_id.encode()], dtype=np.object_))
        client.async_stream_infer(v2.PROGRESS, [run_id_input])
        return _followed(states, on_state, stop)
    except Exception:  # no gRPC to this server: the caller asks over HTTP
        return False
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.stop_stream(cancel_requests=True)
            with contextlib.suppress(Exception):
                client.close()


def _followed(states: queue.Queue, on_state, stop: threading.Event) -> bool:
    heard = time.monotonic()
    while not stop.is_set():
        try:
            state = states.get(timeout=STOP_CHECK_SECONDS)
        except queue.Empty:
            if time.monotonic() - heard > SILENT_SECONDS:
                return False
            continue
        if isinstance(state, Exception):
            return False
        heard = time.monotonic()
        on_state(state)
        if state.get("final"):
            return bool(state.get("ended"))
    return True
