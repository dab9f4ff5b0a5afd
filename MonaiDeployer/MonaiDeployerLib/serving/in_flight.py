"""The runs a server is answering, by the id each client gives its run, so that the client can ask how far one is
and cancel it. Triton cannot stop a request it has handed to a model (after a client's time-out or a gRPC cancel
the run goes on, and the next request waits for it): the ``RUNS`` model's cancel reaches the run's own job, whose
worker is then killed at once. The ``PROGRESS`` model streams a run's state over gRPC each time it changes."""

from __future__ import annotations

import collections
import contextlib
import threading
import time

from ..errors import InputError
from . import v2

EARLY_CANCELS_KEPT = 1000  # ids cancelled before their run started (still queued in Triton)
ENDED_KEPT = 1000  # ids of runs that ended, so that a stream opened late still ends
STREAM_START_SECONDS = 60  # a stream of a run that has not started by then ends (its client asks again)
STREAM_IDLE_SECONDS = 5  # a running run's state is sent at least this often, changed or not


class RunInFlight:
    """One run's cancel flag (set by another thread, acted on by the run's own) and how far it has got."""

    def __init__(self, changed: threading.Condition):
        self.cancel = threading.Event()
        self.stage, self.fraction = "waiting for the worker", None
        self._changed = changed

    def follow(self, event) -> None:
        """A ``Job.wait`` progress callback: the latest stage and fraction, told to the streams that follow it."""
        with self._changed:
            if event.stage:
                self.stage = event.stage
            if event.kind == "progress" and event.fraction is not None:
                self.fraction = event.fraction
            self._changed.notify_all()


class InFlight:
    def __init__(self):
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a run started, ended, or moved on
        self._runs = {}
        self._early_cancels = collections.deque(maxlen=EARLY_CANCELS_KEPT)
        self._ended = collections.deque(maxlen=ENDED_KEPT)

    @contextlib.contextmanager
    def running(self, run_id: str | None):
        """The run ``run_id`` while the block answers it (a run without an id can only be stopped by its time-out)."""
        run = RunInFlight(self._changed)
        if run_id is None:
            yield run
            return
        with self._lock:
            if run_id in self._runs:
                raise InputError(f"a run with the id {run_id} is already running: give each run its own id")
            if run_id in self._early_cancels:
                self._early_cancels.remove(run_id)
                run.cancel.set()
            self._runs[run_id] = run
            self._changed.notify_all()
        try:
            yield run
        finally:
            with self._lock:
                del self._runs[run_id]
                self._ended.append(run_id)
                self._changed.notify_all()

    def cancel_run(self, run_id: str) -> dict:
        """Cancel the run now, or as it starts if it is still queued; its state as it was asked."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                self._early_cancels.append(run_id)
            else:
                run.cancel.set()
        return self.run_state(run_id)

    def run_state(self, run_id: str) -> dict:
        with self._lock:
            return self._state(run_id)

    def states(self, run_id: str, start_seconds: float = STREAM_START_SECONDS):
        """The run's state now and each time it changes, until it has ended (the last state says ``ended``) or, if
        it has not started within ``start_seconds``, until then (the last state says ``running`` False)."""
        last, start_by = None, time.monotonic() + start_seconds
        while True:
            with self._changed:
                wait = STREAM_IDLE_SECONDS if last and last["running"] else \
                    min(STREAM_IDLE_SECONDS, max(0.0, start_by - time.monotonic()))
                self._changed.wait_for(lambda sent=last: self._state(run_id) != sent, wait)
                state = self._state(run_id)
            final = state.get("ended") or (not state["running"] and time.monotonic() >= start_by)
            yield {**state, "final": bool(final)}
            if final:
                return
            last = state

    def _state(self, run_id: str) -> dict:
        run = self._runs.get(run_id)
        if run is None:
            return {"run_id": run_id, "running": False, **({"ended": True} if run_id in self._ended else {})}
        return {"run_id": run_id, "running": True, "stage": run.stage, "fraction": run.fraction,
                "cancelling": run.cancel.is_set()}


def runs_callable(in_flight: InFlight):
    """The ``RUNS`` model's callable: ``action`` "cancel" or "state" of the run ``run_id``."""
    actions = {"cancel": in_flight.cancel_run, "state": in_flight.run_state}

    def answer(requests) -> list:
        answers = []
        for request in requests:
            action = v2.text_of(request[v2.ACTION])
            document = actions[action](v2.text_of(request[v2.RUN_ID])) if action in actions else \
                v2.error_document(InputError(f"no action {action}: {' or '.join(actions)}"))
            answers.append({v2.RESULT: v2.json_tensor(document)})
        return answers

    return answer


def progress_callable(in_flight: InFlight):
    """The decoupled ``PROGRESS`` model's callable (a generator, as PyTriton streams them): the states of the run
    ``run_id``, one response each, over gRPC (HTTP refuses decoupled models)."""

    def stream(requests):
        for request in requests:  # without a batcher, Triton hands a decoupled model one request at a time
            for state in in_flight.states(v2.text_of(request[v2.RUN_ID])):
                yield [{v2.RESULT: v2.json_tensor(state)}]

    return stream
