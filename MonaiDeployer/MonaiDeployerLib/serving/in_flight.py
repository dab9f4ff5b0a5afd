"""The runs a server is answering, by the id each client gives its run, so that the client can ask how far one is
and cancel it. Triton cannot stop a request it has handed to a model (after a client's time-out or a gRPC cancel
the run goes on, and the next request waits for it): the ``RUNS`` model's cancel reaches the run's own job, whose
worker is then killed at once."""

from __future__ import annotations

import collections
import contextlib
import threading

from ..errors import InputError
from . import v2

EARLY_CANCELS_KEPT = 1000  # ids cancelled before their run started (still queued in Triton)


class RunInFlight:
    """One run's cancel flag (set by another thread, acted on by the run's own) and how far it has got."""

    def __init__(self):
        self.cancel = threading.Event()
        self.stage, self.fraction = "waiting for the worker", None

    def follow(self, event) -> None:
        """A ``Job.wait`` progress callback: the latest stage and fraction."""
        if event.stage:
            self.stage = event.stage
        if event.kind == "progress" and event.fraction is not None:
            self.fraction = event.fraction


class InFlight:
    def __init__(self):
        self._lock = threading.Lock()
        self._runs = {}
        self._early_cancels = collections.deque(maxlen=EARLY_CANCELS_KEPT)

    @contextlib.contextmanager
    def running(self, run_id: str | None):
        """The run ``run_id`` while the block answers it (a run without an id can only be stopped by its time-out)."""
        run = RunInFlight()
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
        try:
            yield run
        finally:
            with self._lock:
                del self._runs[run_id]

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
            run = self._runs.get(run_id)
        if run is None:
            return {"run_id": run_id, "running": False}
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
