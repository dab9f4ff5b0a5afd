"""``RemoteRunner``: a ``Runner`` whose runs happen on a server that ``serve`` started. The same ``ready``,
``submit`` (a ``Job`` to poll or wait, with its stage and fraction done as the server reports them), ``run`` and
``Result``, so that a batch, the command line and the panel run on a server as they run here. Cancel and time-out
stop the run on the server. The stage and fraction stream over gRPC where this Python has ``tritonclient[grpc]``
and reaches the server's gRPC port; elsewhere they are asked for over HTTP every half second. A Deploy app that
reads DICOM gets the volume, not the original files."""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid

from ..errors import MonaiDeployerError, WorkerError
from ..imageio.volume import Volume, check_volume
from ..runs import leftovers
from ..runs.runner import Result
from ..transport.job import Job
from ..transport.protocol import Event
from . import progress_stream
from .remote import RemoteServer, ServedModel

STATE_SECONDS = 0.5  # how often a run's stage is asked for while it runs


class RemoteRunner:
    def __init__(self, url: str):
        self.server = RemoteServer(url)
        self._jobs_folder = None

    def __enter__(self) -> RemoteRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def ready(self, package, trust: bool = False) -> ServedModel:
        """The served model that runs ``package`` (its name, a ``PackageInfo``, or a path, matched by content hash).
        ``trust`` is the server's: it trusted its packages when it started."""
        return package if isinstance(package, ServedModel) else self.server.describe(self.server.find(package))

    def prepared(self, model: ServedModel, volume: Volume, dicom_files: list) -> _Case:
        check_volume(volume)
        return _Case(model, volume)

    def submit(self, package, volume: Volume, trust: bool = False, dicom_files: list | None = None,
               job: Job | None = None) -> Job:
        return self.submit_folder(self.prepared(self.ready(package, trust), volume, dicom_files or []), job)

    def submit_folder(self, case: _Case, job: Job | None = None) -> Job:
        """Start the run of a case ``prepared`` for a model ``ready`` found; the job ends when the server answers."""
        request = RemoteRequest(self.server, case.model, case.volume)
        return (job or Job()).follow(request, request.stop)

    def run(self, package, volume: Volume, progress=None, timeout: float | None = None, trust: bool = False,
            dicom_files: list | None = None) -> Result:
        return self.submit(package, volume, trust, dicom_files).wait(timeout=timeout, progress=progress)

    @property
    def private_folder(self) -> str:
        """A folder for the output files' ledger (as a ``Runner``'s: a file half-written when this process is killed
        is removed by the next runner)."""
        if self._jobs_folder is None:
            self._jobs_folder = leftovers.make_private_folder()
        return self._jobs_folder

    def close(self) -> None:
        if self._jobs_folder is not None:
            leftovers.remove_owned([self._jobs_folder])
            self._jobs_folder = None


class _Case:
    """A case ready to send: the volume stays in memory (nothing of it is written here)."""

    def __init__(self, model: ServedModel, volume: Volume):
        self.model, self.volume = model, volume

    def remove(self) -> None:
        self.volume = None


class RemoteRequest:
    """One run on the server, followed as a worker's request is (``Job.follow``): the call in a thread of its own,
    and another asking the server how far the run is, as "progress" events."""

    started_worker = False

    def __init__(self, server: RemoteServer, model: ServedModel, volume: Volume):
        self.run_id = uuid.uuid4().hex
        self.stage, self.answer, self.error = "sending the volume", None, None
        self.progress_over = None  # "gRPC" once a state has been streamed, "HTTP" once one has been asked for
        self._reported = None
        self._server, self._events, self._ended = server, queue.Queue(), threading.Event()
        threading.Thread(target=self._run, args=(model, volume), daemon=True, name="monaideployer-remote").start()
        threading.Thread(target=self._watch, daemon=True, name="monaideployer-remote-state").start()

    def _run(self, model: ServedModel, volume: Volume) -> None:
        try:
            answer = self._server.run(model.model, volume, run_id=self.run_id)
            answer.package = model
        except MonaiDeployerError as error:
            self.error = error
        except Exception as error:  # a thread's failure must end its job, not vanish
            self.error = WorkerError(f"the run on {self._server.url} failed: {type(error).__name__}: {error}")
        else:
            self.answer = answer
        self._ended.set()

    def _watch(self) -> None:
        with contextlib.suppress(MonaiDeployerError):  # the run's own call reports a server gone
            address = self._server.grpc_address()
            if address and progress_stream.follow_run(address, self.run_id, self._streamed, self._ended):
                return
        while not self._ended.wait(STATE_SECONDS):
            try:
                state = self._server.run_state(self.run_id)
            except MonaiDeployerError:
                continue
            self.progress_over = self.progress_over or "HTTP"
            self._report(state)

    def _streamed(self, state: dict) -> None:
        self.progress_over = "gRPC"
        self._report(state)

    def _report(self, state: dict) -> None:
        """A state the server gave, as a "progress" event where the run has moved on."""
        if state.get("running") and (state["stage"], state["fraction"]) != self._reported:
            self._reported = state["stage"], state["fraction"]
            self.stage = state["stage"]
            self._events.put(Event("progress", *self._reported))

    def events(self, block_seconds: float = 0) -> list:
        events = []
        if not self._ended.is_set() and block_seconds:
            self._ended.wait(block_seconds)
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def stop(self) -> None:
        """The job's cancel or time-out: stop the run on the server (its answer, Cancelled, ends the call's
        thread)."""
        self._ended.set()
        with contextlib.suppress(MonaiDeployerError):  # a server that cannot be reached runs nothing of ours
            self._server.cancel_run(self.run_id)
