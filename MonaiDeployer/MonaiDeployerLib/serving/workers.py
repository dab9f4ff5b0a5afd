"""The server's workers: made alike (one Python, device and share of the cores), with one more started and warmed
ahead, in standby, to take the place of a worker that was stopped (a cancel, a time-out, a crash). A new worker
needs seconds to import torch and MONAI; the standby's place is taken at once, and the next request does not wait."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from ..runs.runner import Runner


class Workers:
    def __init__(self, python: str | None = None, device: str = "auto", threads: int | None = None,
                 standby: bool = True):
        """``standby``: False keeps no worker in standby, and a stopped worker's replacement starts when needed."""
        self._python, self._device, self._threads, self._keeps_standby = python, device, threads, standby
        self._lock = threading.Lock()
        self._waiting = []  # standby runners made and not yet taken, closed with the server
        self._closed = False
        self._warming = ThreadPoolExecutor(1, thread_name_prefix="standby-worker")
        self._standby = None

    def warm_standby(self) -> None:
        """Begin warming the standby worker (at the server's start, beside the instances' own)."""
        if self._keeps_standby:
            self._standby = self._warming.submit(self._warmed)

    def new(self) -> Runner:
        return Runner(self._python, self._device, threads=self._threads)

    def replacement(self) -> Runner:
        """The standby worker (waiting for it only if it is still warming); the next begins to warm. Without a
        standby, a new runner, whose worker starts with its next run."""
        if self._standby is None:
            return self.new()
        with self._lock:
            taken, self._standby = self._standby, self._warming.submit(self._warmed)
        runner = taken.result()
        with self._lock:
            self._waiting.remove(runner)
        return runner

    def _warmed(self) -> Runner:
        runner = self.new()
        with self._lock:
            if self._closed:
                raise RuntimeError("the server has stopped")
            self._waiting.append(runner)
        warming = runner.begin_warmup()  # None where the worker's Python has no torch (a MAP's host side)
        if warming is not None:
            warming.wait()
        return runner

    def close(self) -> None:
        """Stop the standby worker, even while it warms."""
        with self._lock:
            self._closed, waiting = True, list(self._waiting)
        for runner in waiting:
            runner.close()
        self._warming.shutdown(wait=False, cancel_futures=True)
