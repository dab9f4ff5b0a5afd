"""Starts, talks to, cancels and restarts one worker process; no Qt, so Slicer polls it from a timer.

A call is non-blocking: ``WorkerClient.call`` writes one request and returns a ``job.Job`` whose
``poll`` drains what the worker said so far. Cancel kills the worker's whole process group; the
next call starts a fresh worker.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from .. import errors
from ..errors import WorkerError
from . import protocol
from .job import Job
from .protocol import Event

LIBRARY_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds MonaiDeployerLib
BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from MonaiDeployerLib.inference.worker import main; main()"
STDERR_LINES_KEPT = 40
logger = logging.getLogger(__name__)
ERROR_TYPES = {name: getattr(errors, name) for name in (
    "InputError", "PackageError", "NotAMapError", "CannotKeepWarm", "OutputError", "WorkerError")}


class WorkerClient:
    """One worker process in ``python`` (default: this interpreter), started on first use.

    ``launcher`` starts that Python another way (``podman run -i ... IMAGE python3`` for a warm MAP),
    and ``library_parent`` is where that Python finds this package.
    """

    def __init__(self, python: str | None = None, launcher: list | None = None, library_parent: str = LIBRARY_PARENT):
        self.python = python or sys.executable
        self._launcher = launcher
        self._library_parent = library_parent
        self._process = None
        self._messages = queue.Queue()
        self._stderr = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._environment = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # the panel's warm-up thread and the GUI thread may both send
        self.started_at = None
        self.startup_seconds = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.alive else None

    def start(self) -> bool:
        """Start the worker unless it runs; True when this call started it."""
        with self._lock:
            if self.alive:
                return False
            self._reset()
            if self._launcher is None and not os.path.exists(self.python):
                raise WorkerError(f"worker Python not found: {self.python}")
            options = {"start_new_session": True} if os.name == "posix" else {
                "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
            try:
                self._process = subprocess.Popen(
                    [*(self._launcher or [self.python]), "-u", "-c", BOOT, self._library_parent],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True, encoding="utf-8", errors="replace", bufsize=1, **options,
                )
            except OSError as error:
                raise WorkerError(f"cannot start the worker Python {self.python}: {error.strerror}") from error
            self.started_at = time.perf_counter()
            process = self._process
            logger.info("Started a worker in %s (process %s)", self.python, process.pid)
            stderr_reader = threading.Thread(target=self._read_stderr, args=(process, self._messages), daemon=True)
            stderr_reader.start()
            threading.Thread(target=self._read_protocol, args=(process, self._messages, stderr_reader),
                             daemon=True).start()
            return True

    def _reset(self) -> None:
        self._messages = queue.Queue()
        self._stderr.clear()
        self._environment = None
        self.startup_seconds = None

    def _read_protocol(self, process, messages: queue.Queue, stderr_reader: threading.Thread) -> None:
        for line in process.stdout:
            try:
                message = protocol.decode(line)
            except ValueError:
                messages.put({"event": "stderr", "line": line.rstrip()})
                continue
            if message.get("event") == "hello":
                self._environment = message["environment"]
                self.startup_seconds = time.perf_counter() - self.started_at
                logger.debug("Worker %s ready in %.2f s", process.pid, self.startup_seconds)
            messages.put(message)
        process.wait()
        stderr_reader.join(timeout=2)  # so the exit report can quote the worker's last words
        messages.put({"event": "exit", "code": process.returncode})

    def _read_stderr(self, process, messages: queue.Queue) -> None:
        for line in process.stderr:
            self._stderr.append(line.rstrip())
            messages.put({"event": "stderr", "line": line.rstrip()})

    def environment(self, timeout: float = 120) -> dict:
        """What the worker's Python has (versions read without importing); starts the worker if needed."""
        self.start()
        deadline = time.monotonic() + timeout
        while self._environment is None:
            if not self.alive:
                raise WorkerError(f"the worker Python {self.python} stopped at start-up: {self.last_output()}")
            if time.monotonic() > deadline:
                raise WorkerError(f"the worker Python {self.python} did not start within {timeout:.0f} s")
            time.sleep(0.01)
        return self._environment

    def call(self, op: str, job: Job | None = None, **payload) -> Job:
        """Send one request; the returned ``Job`` (``job``, or a new one) follows it. Cancelling it kills the worker,
        the only way to stop a forward pass at once; the next call starts a new one."""
        started_now = self.start()
        request = Request(self, next(self._ids), op, self._messages, started_now)
        self._send({"id": request.id, "op": op, **payload})
        return (job or Job()).follow(request, self.kill)

    def tell(self, op: str, **payload) -> None:
        """Send a message that gets no answer (the worker's reader takes it at once, even during a run)."""
        self.start()
        self._send({"op": op, **payload})

    def _send(self, message: dict) -> None:
        try:
            with self._send_lock:
                self._process.stdin.write(protocol.encode(message))
                self._process.stdin.flush()
        except OSError as error:
            raise WorkerError(f"the worker process is not answering: {error}") from error

    def remember_output(self, lines: list) -> None:
        """Keep lines the worker reported another way (a traceback in an error event) with its stderr."""
        self._stderr.extend(lines)

    def last_output(self) -> str:
        lines = [line for line in self._stderr if line.strip()]
        return lines[-1] if lines else "no output"

    def kill(self) -> None:
        """Stop the worker and everything it started, now."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        logger.info("Stopping the worker (process %s) and everything it started", process.pid)
        if os.name == "posix":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        else:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
        process.wait(timeout=5)

    def close(self, timeout: float = 5) -> None:
        """Ask the worker to stop, then make sure it has."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            try:
                process.stdin.write(protocol.encode({"op": "shutdown"}))
                process.stdin.flush()
                process.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()
        for stream in (process.stdin, process.stdout, process.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        self._process = None


class Request:
    """What the worker says about one request, as ``protocol.Event``s; ``answer`` or ``error`` once it has ended.

    A ``Job`` follows it; the worker's stderr lines come as "log" events of whichever request is polled.
    """

    def __init__(self, client: WorkerClient, call_id: int, op: str, messages: queue.Queue, started_worker: bool):
        self.client = client
        self.id = call_id
        self.op = op
        self.started_worker = started_worker
        self.stage = "starting the worker" if started_worker else "waiting for the worker"
        self.answer = None
        self.error = None
        self._messages = messages

    def events(self, block_seconds: float = 0) -> list:
        """Progress and log events since the last call; waits up to ``block_seconds`` for the first message."""
        events = []
        while self.answer is None and self.error is None:
            try:
                message = self._messages.get(timeout=block_seconds) if block_seconds else self._messages.get_nowait()
            except queue.Empty:
                break
            block_seconds = 0
            event = self._handle(message)
            if event is not None:
                events.append(event)
        return events

    def _handle(self, message: dict):
        kind = message.get("event")
        if kind == "stderr":
            return Event("log", self.stage, None, message["line"])
        if kind == "exit":
            self.error = WorkerError(
                f"the worker process stopped unexpectedly ({_exit_text(message['code'])}) while {self.stage}; "
                f"its last output: {self.client.last_output()}")
            return None
        if message.get("id") != self.id:
            return None
        if kind == "progress":
            self.stage = message["stage"]
            return Event("progress", self.stage, message.get("fraction"))
        if kind == "done":
            self.answer = message
        elif kind == "error":
            if message.get("traceback"):
                self.client.remember_output(message["traceback"].splitlines())
            self.error = ERROR_TYPES.get(message.get("type"), WorkerError)(message["message"])
        return None


def _exit_text(code) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
