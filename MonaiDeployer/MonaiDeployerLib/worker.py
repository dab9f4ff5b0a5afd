"""The inference process: a request loop that keeps Python, torch, MONAI and loaded models between runs.

Started by ``client.WorkerClient`` in any Python that has torch and MONAI (Slicer's own, a venv,
a conda environment). Protocol lines go to a private copy of stdout; everything libraries print
goes to stderr, so a stray ``print`` cannot break the protocol.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys
import time
import traceback

import numpy as np

from . import protocol
from .backends import create_backend
from .errors import MonaiDeployerError, WorkerError
from .packages import PackageInfo, normalise_name
from .volume import Volume


def installed_packages() -> dict:
    """Every installed distribution's version by normalised name, read without importing anything.

    When a name is installed twice (a venv over another environment's site-packages), the one
    earlier on ``sys.path`` wins, as it does for ``import``.
    """
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalise_name(name), dist.version)
    return found


class Worker:
    def __init__(self, channel):
        self._channel = channel
        self._backends = {}
        self._imported = False

    def send(self, message: dict) -> None:
        self._channel.write(protocol.encode(message))
        self._channel.flush()

    def serve(self, requests) -> None:
        self.send({"event": "hello", "environment": {
            "python": platform.python_version(), "executable": sys.executable, "pid": os.getpid(),
            "packages": installed_packages(),
        }})
        try:
            for line in requests:
                if not line.strip():
                    continue
                request = protocol.decode(line)
                if request.get("op") == "shutdown":
                    return
                self.handle(request)
        finally:
            self.close()

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
        """Import torch and MONAI once; every later run finds them imported."""
        if self._imported:
            return {"timings": {}}
        started = time.perf_counter()
        for name in ("torch", "monai"):
            try:
                importlib.import_module(name)
            except ImportError as error:
                raise WorkerError(f"the worker Python {sys.executable} cannot import {name} ({error}); "
                                  f"install {name} in that environment or choose another Python") from error
        self._imported = True
        return {"timings": {"import": time.perf_counter() - started}}

    def run(self, request: dict) -> dict:
        request_id = request.get("id")
        timings = self.warmup(request)["timings"]
        package = PackageInfo.from_dict(request["package"])
        started = time.perf_counter()
        volume = Volume(np.load(request["input"], allow_pickle=False), np.asarray(request["ijk_to_ras"]))
        timings["read_input"] = time.perf_counter() - started

        def report(stage: str, fraction: float | None) -> None:
            self.send({"id": request_id, "event": "progress", "stage": stage, "fraction": fraction})

        backend = self._backends.get(package.mode)
        if backend is None:
            backend = self._backends[package.mode] = create_backend(package.mode)
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
        }


def _label_names(labels: dict) -> dict:
    return {str(value): name for value, name in labels.items()}


def main() -> None:
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    Worker(channel).serve(sys.stdin)


if __name__ == "__main__":
    main()
