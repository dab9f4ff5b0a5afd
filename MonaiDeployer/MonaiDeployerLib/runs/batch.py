"""Many cases through warm workers, pipelined, with no thread but the readers: poll it (the panel does, from a timer)
or take ``outcomes()`` (the command line and ``Runner.run_many`` do).

Each lane is one ``Runner`` (one worker) and its next case: while the worker runs a case, a reader thread reads the
next one and writes it into a run folder for that worker, so that the moment a case is done the next is handed
over, before the finished one is handed on to be written. A case that fails (unreadable, refused, the model's own
error, a worker that crashed) is one outcome with its error; the batch goes on, with a new worker if need be.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import InputError, MonaiDeployerError
from ..imageio.volume import check_volume
from .cases import Case
from .runner import Result, RunFolder

IDLE_POLL_SECONDS = 0.01


@dataclass
class CaseOutcome:
    """What became of one case: its ``result``, or the ``error`` that stopped it (one line); ``seconds``: its own
    reading and run (not the time it waited for a worker)."""

    case: Case
    result: Result | None = None
    error: MonaiDeployerError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def source(self):
        """What the caller named: the ``Volume`` given, else the file or the DICOM series' folder."""
        return self.case.volume if self.case.volume is not None else self.case.path


@dataclass
class _Prepared:
    case: Case
    read_seconds: float = 0.0
    folder: RunFolder | None = None
    error: MonaiDeployerError | None = None
    submitted: float | None = None  # when its worker got it

    def seconds(self) -> float:
        return self.read_seconds + (time.perf_counter() - self.submitted if self.submitted is not None else 0.0)


class _Lane:
    def __init__(self, runner):
        self.runner = runner
        self.job = None
        self.running = None  # the _Prepared whose job runs
        self.next = None  # the future of the next _Prepared


class Batch:
    """``cases`` (``cases.Case``) of one package through ``runners`` (one lane each; the caller owns and closes
    them). ``timeout``: seconds after which a case that has not finished is stopped and counted as failed."""

    def __init__(self, runners, package, cases, trust: bool = False, timeout: float | None = None):
        self._waiting = collections.deque(cases)
        self.total = len(self._waiting)
        self._timeout = timeout
        self.package = runners[0].ready(package, trust)
        for runner in runners[1:]:
            runner.ready(self.package, trust)
        self._lanes = [_Lane(runner) for runner in runners]
        self._readers = ThreadPoolExecutor(max_workers=len(runners), thread_name_prefix="monaideployer-read",
                                           initializer=_yield_to_workers)
        self._closed = False
        for lane in self._lanes:
            self._read_next(lane)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def done(self) -> bool:
        return all(lane.job is None and lane.next is None for lane in self._lanes)

    def in_flight(self) -> list:
        """(case, stage) of each case a worker is running."""
        return [(lane.running.case, lane.job.stage) for lane in self._lanes if lane.job is not None]

    def poll(self, progress=None) -> list:
        """The outcomes of the cases finished since the last call (never blocks); hands each free worker its next
        case. ``progress(case, event)`` gets the running cases' ``protocol.Event``s (stages, log lines)."""
        outcomes = []
        for lane in self._lanes:
            if lane.job is not None:
                self._follow(lane, outcomes, progress)
            while lane.job is None and lane.next is not None and lane.next.done():
                self._start(lane, lane.next.result(), outcomes)
        return outcomes

    def outcomes(self, progress=None, idle=None):
        """Each case's ``CaseOutcome`` as soon as it is done, until every case is; ``idle()`` is called between polls
        that found none (a progress bar shows ``in_flight()`` there)."""
        while not self.done:
            finished = self.poll(progress)
            yield from finished
            if not finished:
                if idle is not None:
                    idle()
                time.sleep(IDLE_POLL_SECONDS)

    def cancel(self) -> None:
        """Stop the cases in flight (their workers are stopped) and start no other, without waiting: a case being
        read is undone (its run folder removed) once its reader is through."""
        self._waiting.clear()
        for lane in self._lanes:
            if lane.job is not None:
                lane.job.cancel()
                lane.job = lane.running = None
            if lane.next is not None:
                lane.next.add_done_callback(_undo)  # at once if it is done already
                lane.next = None

    def close(self, wait: bool = True) -> None:
        """Cancel what is left and stop the readers; ``wait``: until a case being read is undone (a command line
        does, before its runners remove their folders; the panel, whose runner stays, need not). The runners stay
        open."""
        if not self._closed:
            self._closed = True
            self.cancel()
        self._readers.shutdown(wait=wait)

    def _follow(self, lane: _Lane, outcomes: list, progress) -> None:
        for event in lane.job.poll():
            if progress is not None:
                progress(lane.running.case, event)
        if not lane.job.done and self._timeout is not None and \
                time.perf_counter() - lane.running.submitted > self._timeout:
            lane.job.expire(self._timeout)
        if lane.job.done:
            job, prepared = lane.job, lane.running
            lane.job = lane.running = None
            outcomes.append(CaseOutcome(prepared.case, job.result, job.error, prepared.seconds()))

    def _start(self, lane: _Lane, prepared: _Prepared, outcomes: list) -> None:
        """Hand a prepared case to the lane's worker (or count it failed), then begin reading the one after it."""
        lane.next = None
        if prepared.error is not None:
            outcomes.append(CaseOutcome(prepared.case, error=prepared.error, seconds=prepared.seconds()))
        else:
            try:
                prepared.submitted = time.perf_counter()
                lane.job = lane.runner.submit_folder(prepared.folder)
                lane.running = prepared
            except MonaiDeployerError as error:  # the worker cannot start: this case fails, the next tries again
                outcomes.append(CaseOutcome(prepared.case, error=error, seconds=prepared.seconds()))
        self._read_next(lane)

    def _read_next(self, lane: _Lane) -> None:
        if not self._waiting or self._closed:
            return
        case, started = self._waiting.popleft(), time.perf_counter()
        try:
            readable = case.for_reader()
        except Exception as error:  # a scene node gone or unreadable: this case's failure
            lane.next = Future()
            lane.next.set_result(_Prepared(case, time.perf_counter() - started, error=_case_error(case, error)))
            return
        lane.next = self._readers.submit(self._prepare, lane.runner, case, readable, started)

    def _prepare(self, runner, case: Case, readable: Case, started: float) -> _Prepared:
        """In a reader thread: the case's volume read, checked and written into a run folder of ``runner``."""
        prepared = _Prepared(case)
        try:
            volume = readable.read()
            check_volume(volume)
            prepared.folder = runner.prepared(self.package, volume, list(readable.dicom_files))
        except Exception as error:  # a reader's failure is this case's
            prepared.error = _case_error(case, error)
        prepared.read_seconds = time.perf_counter() - started
        return prepared


def _case_error(case: Case, error: Exception) -> MonaiDeployerError:
    """Ours as they are (they name the cause); anything else named as this case's, on one line."""
    if isinstance(error, MonaiDeployerError):
        return error
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return InputError(f"cannot read {case.name}: {text}")


def _yield_to_workers() -> None:
    """A reader thread runs at the lowest priority, on Linux, where each thread has its own: reading the next case
    then takes the cores the workers leave idle, not theirs. At the workers' priority it preempted torch's threads,
    whose parallel steps wait for the slowest one, and cost them as much time as reading ahead saved (2 cores)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _undo(future) -> None:
    """A case read for a batch that was cancelled meanwhile: its run folder (patient data) goes."""
    prepared = future.result()
    if prepared.folder is not None:
        prepared.folder.remove()
