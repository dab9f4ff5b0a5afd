"""``Job``: one request to a worker, followed to its end: the worker client's calls, the API's runs and the Slicer
node runs are all jobs.

``poll()`` returns what happened since the last poll (``protocol.Event``s: progress and log lines, then one
"done" or "error"); ``wait(timeout=None, progress=None)`` polls until the end and returns ``result`` or raises
``error``; ``cancel()`` stops it at once. Once the worker has answered, the answer goes through the job's steps
in order, each turning the previous value into the next (a run's files into a ``Result``, a ``Result`` into
Slicer nodes). No thread: Slicer polls a job from a timer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import Cancelled, MonaiDeployerError, WorkerError
from .protocol import Event

logger = logging.getLogger(__name__)
WAIT_POLL_SECONDS = 0.1


class Job:
    """Made empty, then given the request it follows (``follow``); the worker client does both in ``call``.

    ``then(step, stage)`` adds a step; ``on_end(cleanup)`` runs however the job ends; ``on_cancel(stop)`` runs
    when it is cancelled or times out (the client's stop kills the worker: the only way to stop a forward pass).
    """

    def __init__(self):
        self.result = None
        self.error = None
        self.request = None
        self._ended = False
        self._step_stage = None  # the stage of the step running, once the worker has answered
        self._steps = []
        self._cleanups = []
        self._stops = []

    def follow(self, request, stop: Callable[[], None]) -> Job:
        """Follow ``request`` (``client.Request``: its ``events``, ``answer``, ``error`` and ``stage``)."""
        self.request = request
        self._stops.insert(0, stop)
        return self

    def then(self, step: Callable, stage: str) -> Job:
        """Add a step: ``step(value)`` gives the next value (the first gets the worker's answer); ``stage`` names it."""
        self._steps.append((step, stage))
        return self

    def on_end(self, cleanup: Callable[[], None]) -> Job:
        self._cleanups.append(cleanup)
        return self

    def on_cancel(self, stop: Callable[[], None]) -> Job:
        self._stops.append(stop)
        return self

    @property
    def done(self) -> bool:
        return self._ended

    @property
    def stage(self) -> str:
        return self._step_stage or self.request.stage

    def poll(self, block_seconds: float = 0) -> list:
        """New events; waits up to ``block_seconds`` for the first one (0: never blocks)."""
        if self._ended:
            return []
        events = self.request.events(block_seconds)
        if self.request.error is not None:
            events.append(self._end(error=self.request.error))
        elif self.request.answer is not None:
            events.append(self._finish())
        return events

    def wait(self, timeout: float | None = None, progress: Callable[[Event], None] | None = None,
             cancel: threading.Event | None = None):
        """Block until the job ends and return its result, or raise its error; ``progress`` gets each event.

        A time-out stops it as a cancel does, and raises WorkerError; so does anything ``progress`` raises, and an
        interrupt (Ctrl+C), which then propagate. ``cancel``: set by another thread (a server's cancel request), it
        cancels the job within a poll, from this thread, which alone touches the job.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._ended:
                for event in self.poll(block_seconds=WAIT_POLL_SECONDS):
                    if progress is not None:
                        progress(event)
                if self._ended:
                    break
                if cancel is not None and cancel.is_set():
                    self.cancel()
                elif deadline is not None and time.monotonic() > deadline:
                    self.expire(timeout)
        except BaseException:
            self.cancel()
            raise
        if self.error is not None:
            raise self.error
        return self.result

    def expire(self, timeout: float) -> None:
        """Stop now, as a cancel does, and end with the error of a run that took longer than ``timeout`` seconds."""
        self._stop_with(lambda stage: WorkerError(f"no answer from the worker within {timeout:g} s while {stage}; "
                                                  "run stopped"))

    def cancel(self) -> None:
        """Stop now; nothing of the steps happens (a cancelled run leaves the scene as it was)."""
        self._stop_with(lambda stage: Cancelled(f"cancelled by the user while {stage}"))

    def _stop_with(self, error: Callable[[str], BaseException]) -> None:
        if self._ended:
            return
        stage = self.stage
        self._stop()
        self._end(error=error(stage))

    def _stop(self) -> None:
        for stop in self._stops:
            stop()

    def _finish(self) -> Event:
        value = self.request.answer
        try:
            for step, stage in self._steps:
                self._step_stage = stage
                value = step(value)
        except Exception as error:  # a step's own errors say what failed; anything else is named here
            if not isinstance(error, MonaiDeployerError):
                logger.debug("The %s step of a job failed", self.stage, exc_info=True)
                error = WorkerError(f"{self.stage} failed: {type(error).__name__}: {error}")
            return self._end(error=error)
        return self._end(result=value)

    def _end(self, result=None, error: BaseException | None = None) -> Event:
        self.result, self.error, self._ended = result, error, True
        for cleanup in self._cleanups:
            cleanup()
        if error is not None:
            logger.debug("Job ended while %s: %s", self.stage, error)
            return Event("error", self.stage, None, str(error))
        return Event("done", self.stage, 1.0)
