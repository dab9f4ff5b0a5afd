"""The inference process: a request loop that keeps Python, torch, MONAI and loaded models between runs.

Started by ``client.WorkerClient`` in any Python (Slicer's own, a venv, a conda environment, a
MAP image's); it needs numpy, and torch and MONAI only for the modes that run a model in it
(TorchScript, bundles): a Deploy app imports what it uses, a MAP brings its own. Protocol lines go
to a private copy of stdout; everything libraries print goes to stderr, so a stray ``print``
cannot break the protocol.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import platform
import queue
import signal
import sys
import threading
import time
import traceback

import numpy as np

from ..environment.requirements import installed_packages
from ..errors import MonaiDeployerError, WorkerError
from ..imageio.volume import Volume
from ..packages import PackageInfo
from ..packages.kind import FRAMEWORKS
from ..runs import leftovers
from ..transport import protocol
from ..transport.client import LIBRARY_PARENT


class Worker:
    """Serves requests one at a time; a reader thread notices at once when the owner is gone.

    The owner (the process that started this worker) holds the write end of its stdin: end of file
    without a shutdown request means it was killed (out of memory, a crash, ``kill -9``). Then
    nothing of its runs may stay: the worker removes the run in flight, the owner's private folder
    (with any output it was writing) and the containers it started, and stops whatever it runs.
    """

    def __init__(self, channel):
        self._channel = channel
        self._backends = {}
        self._imported = set()
        self._in_flight = None  # the request being served
        self._owner_gone = False
        self._state = threading.Lock()  # between the reader noticing the end and the loop taking a request
        self._owner_folders = set()  # the private folders its owner named ("owner" messages)
        self._default_threads = None  # torch's CPU threads before a runner set any

    def send(self, message: dict) -> None:
        self._channel.write(protocol.encode(message))
        self._channel.flush()

    def serve(self, requests) -> None:
        self.send({"event": "hello", "environment": {
            "python": platform.python_version(), "executable": sys.executable, "pid": os.getpid(),
            "packages": installed_packages(),
        }})
        inbox = queue.Queue()
        threading.Thread(target=self._read, args=(requests, inbox), daemon=True).start()
        shutdown = False
        try:
            while True:
                request = inbox.get()
                if request is None or request.get("op") == "shutdown":
                    shutdown = request is not None
                    return
                with self._state:
                    if self._owner_gone:
                        return
                    self._in_flight = request
                try:
                    self.handle(request)
                finally:
                    with self._state:
                        self._in_flight = None
        finally:
            self.close()
            if not shutdown:
                self._remove_owner_folders()

    def _read(self, requests, inbox: queue.Queue) -> None:
        """Hand each request to the serving loop; at end of file while a run is in flight, abandon it.

        An "owner" message names a private folder of the owner's; it comes before the owner writes anything there.
        """
        try:
            for line in requests:
                if not line.strip():
                    continue
                request = protocol.decode(line)
                if request.get("op") == "owner":
                    self._owner_folders.add(str(request.get("folder")))
                    continue
                inbox.put(request)
                if request.get("op") == "shutdown":
                    return
        except Exception as error:  # an unreadable line: the owner's end of the pipe cannot be trusted any more
            print(f"MonaiDeployer worker: stopped reading requests: {error}", file=sys.stderr)
        with self._state:
            self._owner_gone = True
            in_flight = self._in_flight is not None
        if in_flight:
            self._abandon()
        inbox.put(None)

    def _abandon(self) -> None:
        """The owner died during a run: stop everything this worker started, and remove every trace of its runs.

        The worker leads a process group (the client starts it in a session of its own) holding what it
        started: a cold app, container clients. A cleaner outside that group waits for it to end, then
        removes the owner's folders and the containers named after them, so nothing can write or start
        anything once they are gone. Elsewhere (Windows, or a worker in a MAP's container, whose host
        side cleans up) the worker just stops.
        """
        folders = sorted(self._owner_folders)
        if folders and os.name == "posix" and os.getpgrp() == os.getpid():
            leftovers.start_cleaner(LIBRARY_PARENT, folders)
            with contextlib.suppress(OSError):
                os.killpg(os.getpgrp(), signal.SIGKILL)
        leftovers.remove_owned(folders)
        os._exit(1)

    def _remove_owner_folders(self) -> None:
        """Without a shutdown request the owner is gone: its private folders go, with outputs it was writing."""
        leftovers.remove_owned(sorted(self._owner_folders))

    def close(self) -> None:
        """Let backends that keep something outside this process (a warm MAP container) stop it."""
        for backend in self._backends.values():
            if hasattr(backend, "close"):
                backend.close()

    def handle(self, request: dict) -> None:
        request_id = request.get("id")
        operations = {"warmup": self.warmup, "run": self.run}
        try:
            operation = operations.get(request.get("op"))
            if operation is None:
                raise MonaiDeployerError(f"unknown worker operation {request.get('op')!r}")
            answer = operation(request)
            self.send({"id": request_id, "event": "done", **answer})
        except MonaiDeployerError as error:
            self.send({"id": request_id, "event": "error", "type": type(error).__name__, "message": str(error)})
        except Exception as error:  # an unexpected failure still ends the request, with its traceback
            self.send({"id": request_id, "event": "error", "type": type(error).__name__,
                       "message": f"{type(error).__name__}: {error}".splitlines()[0],
                       "traceback": traceback.format_exc()})

    def warmup(self, request: dict) -> dict:
        """Import torch and MONAI now, so that the first TorchScript or bundle run finds them imported."""
        return {"timings": self._import(FRAMEWORKS)}

    def _import(self, names) -> dict:
        """Import ``names`` once; {"import": seconds} when any was imported now."""
        needed = [name for name in names if name not in self._imported]
        if not needed:
            return {}
        started = time.perf_counter()
        for name in needed:
            try:
                importlib.import_module(name)
            except ImportError as error:
                raise WorkerError(f"the worker Python {sys.executable} cannot import {name} ({error}); "
                                  f"install {name} in that environment or choose another Python") from error
            self._imported.add(name)
        return {"import": time.perf_counter() - started}

    def run(self, request: dict) -> dict:
        """Import what the kind needs, then segment in a frame of its own.

        MONAI keeps the tracebacks of the optional imports that fail while it is first imported, and so
        every frame that called the import, with the locals those frames end with: a frame that imported
        MONAI and then held the volume would keep the first run's input and labels alive for good.
        """
        package = PackageInfo.from_dict(request["package"])
        kind = package.kind
        backend = self._backends.get(kind.mode)
        if backend is None:  # one per kind, kept: loaded models stay loaded
            backend = self._backends[kind.mode] = kind.create_backend()
        timings = self._import(kind.worker_imports)
        self._use_threads(request.get("threads"))
        answer = self._segment(request, package, backend, timings)
        started = time.perf_counter()
        release_freed_memory()
        answer["timings"]["release_memory"] = time.perf_counter() - started
        answer["resident_bytes"] = resident_bytes()
        return answer

    def _use_threads(self, threads: int | None) -> None:
        """torch's CPU threads for this run: the runner's number, else torch's own default (every core)."""
        torch = sys.modules.get("torch")
        if torch is None:
            return
        if self._default_threads is None:
            self._default_threads = torch.get_num_threads()
        wanted = int(threads) if threads else self._default_threads
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    def _segment(self, request: dict, package, backend, timings: dict) -> dict:
        request_id = request.get("id")
        started = time.perf_counter()
        volume = Volume(np.load(request["input"], allow_pickle=False), np.asarray(request["ijk_to_ras"]))
        timings["read_input"] = time.perf_counter() - started

        def report(stage: str, fraction: float | None) -> None:
            self.send({"id": request_id, "event": "progress", "stage": stage, "fraction": fraction})

        segmented = backend.run(package, volume, request.get("device", "auto"), report,
                                work_folder=os.path.dirname(request["input"]))
        started = time.perf_counter()
        np.save(request["output"], segmented.labelmap, allow_pickle=False)
        others = []
        for index, (name, labelmap, labels) in enumerate(segmented.others, start=1):
            path = f"{os.path.splitext(request['output'])[0]}-{index}.npy"
            np.save(path, labelmap, allow_pickle=False)
            others.append({"name": name, "file": path, "labels": _label_names(labels)})
        timings.update(segmented.timings)
        timings["write_output"] = time.perf_counter() - started
        return {
            "labels": _label_names(segmented.labels),
            "colors": {str(value): list(color) for value, color in segmented.colors.items()},
            "timings": timings,
            "model_cached": segmented.model_cached,
            "others": others,
            "notes": segmented.notes,
        }


def release_freed_memory() -> None:
    """Return the memory a run freed to the system. glibc's allocator keeps freed heap pages for reuse, so a warm
    worker would otherwise hold a run's intermediate tensors between runs, as much as the largest run needed."""
    if not sys.platform.startswith("linux"):
        return  # elsewhere the allocator decides when to return memory
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc (musl), its allocator decides
        ctypes.CDLL(None).malloc_trim(0)


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux; None elsewhere): a batch's runs show whether the worker grows."""
    try:
        with open("/proc/self/statm", encoding="ascii") as stream:
            return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _label_names(labels: dict) -> dict:
    return {str(value): name for value, name in labels.items()}


def main() -> None:
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    Worker(channel).serve(sys.stdin)


if __name__ == "__main__":
    main()
