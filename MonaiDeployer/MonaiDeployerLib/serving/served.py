"""A package as a served model: its name on a server, and the answers of its instances, each a warm ``Runner``."""

from __future__ import annotations

import hashlib
import logging
import os
import re

import numpy as np

from ..errors import InputError, WorkerError
from ..imageio.volume import Volume
from ..packages.trust import content_hash
from ..runs.runner import Runner
from . import v2
from .in_flight import InFlight
from .workers import Workers

logger = logging.getLogger(__name__)


def served_name(package) -> str:
    """The package's name made safe for Triton and cut to 24 characters, then its content's hash: a changed package
    is a new model, and a client holding the same package finds it by its own hash. Short, because PyTriton names
    Unix sockets after it, and a socket's path may not pass 107 bytes."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", package.name).strip("-._") or package.mode
    return f"{name[:24].rstrip('-._')}-{served_hash(package)[:12]}"


def served_hash(package) -> str:
    """SHA-256 over what decides the package's answers (the files' contents, not where they lie)."""
    digest = hashlib.sha256(package.mode.encode())
    if not package.kind.on_disk:  # an image reference
        digest.update(package.path.encode())
    else:
        digest.update((package.content_hash or content_hash(package.path)).encode())
    model = package.to_dict()["settings"].get("model")
    for path in (package.sidecar, model if isinstance(model, str) else ""):
        if path and os.path.exists(path):
            digest.update(content_hash(path).encode())
    return digest.hexdigest()


def package_card(package) -> dict:
    """What a client shows of a served model before it sends anything."""
    return {"name": package.name, "version": package.version, "mode": package.mode,
            "description": package.description, "hash": served_hash(package),
            "labels": {str(value): name for value, name in package.labels.items()},
            "colors": {str(value): list(color) for value, color in package.colors.items()},
            "overlapping": package.outputs_overlap}


class ServedPackage:
    """One package on the server, checked and trusted at start; ``instances`` warm workers answer its requests."""

    def __init__(self, package, instances: int, workers: Workers, in_flight: InFlight):
        self.package = package
        self.name = served_name(package)
        self.card = package_card(package)  # once: the package's files are not read again per request
        self.labelmap_datatype = v2.labelmap_datatype(package.labels, package.outputs_overlap)
        self.in_flight = in_flight
        self.instances = [_Instance(self, workers) for _ in range(instances)]

    def start(self) -> None:
        """Every worker started, its requirements checked and torch and MONAI imported where it has them, before the
        first request."""
        for instance in self.instances:
            instance.runner.ready(self.package, trust=True)  # the server's start checked the trust
            warming = instance.runner.begin_warmup()  # None where the worker's Python has no torch (a MAP's host)
            if warming is not None:
                warming.wait()

    def answer(self, instance: _Instance, request) -> dict:
        """A request's outputs. Whatever fails answers its one-line error in ``result``: raised, it would reach the
        client as PyTriton's whole traceback, with this server's paths."""
        try:
            if v2.DESCRIBE in request:
                return {v2.LABELMAP: self._no_labelmap(), v2.RESULT: v2.json_tensor(self.card)}
            parameters = request.parameters or {}
            timeout = parameters.get(v2.RUN_TIMEOUT)
            with self.in_flight.running(parameters.get(v2.RUN_ID)) as run:
                job = instance.ready_runner().submit(self.package, volume_of(request), trust=True)
                result = job.wait(timeout=float(timeout) if timeout else None, progress=run.follow, cancel=run.cancel)
            return {v2.LABELMAP: self._labelmap_sent(result), v2.RESULT: v2.json_tensor({
                "labels": {str(value): name for value, name in result.labels.items()},
                "colors": {str(value): list(color) for value, color in result.colors.items()},
                "overlapping": result.overlapping, "notes": result.notes, "timings": result.timings})}
        except Exception as error:  # every failure is the client's answer
            logger.info("A request to %s failed: %s", self.name, error)
            return {v2.LABELMAP: self._no_labelmap(), v2.RESULT: v2.json_tensor(v2.error_document(error))}

    def _no_labelmap(self) -> np.ndarray:
        """The labelmap of an answer without a run: Triton needs every output, in its declared type."""
        return np.zeros((1, 1, 1, 1), v2.DATATYPES[self.labelmap_datatype])

    def _labelmap_sent(self, result) -> np.ndarray:
        """The labelmap in the type Triton checks it against, C-contiguous as PyTriton copies it (a Deploy app's may
        be a transposed view); a value that type cannot hold is refused."""
        labelmap, dtype = result.labelmap.array, np.dtype(v2.DATATYPES[self.labelmap_datatype])
        if labelmap.dtype != dtype:
            if labelmap.size and (labelmap.min() < 0 or labelmap.max() > np.iinfo(dtype).max):
                raise WorkerError(f"the result has label values up to {labelmap.max()}, which the model's "
                                  f"{self.labelmap_datatype} labelmap cannot hold (its labels go to "
                                  f"{max(self.package.labels, default=0)})")
            labelmap = labelmap.astype(dtype)
        return np.ascontiguousarray(v2.channels_last(labelmap))

    def close(self) -> None:
        for instance in self.instances:
            instance.runner.close()


def catalogue_callable(served: list, grpc_port: int | None = None):
    """The ``CATALOGUE`` model's callable: every served model's name and card, for any request, and the gRPC port
    where the ``PROGRESS`` model streams."""
    cards = {"models": [{"model": package.name, **package.card} for package in served],
             **({"grpc_port": grpc_port} if grpc_port else {})}
    return lambda requests: [{v2.RESULT: v2.json_tensor(cards)} for _request in requests]


class _Instance:
    """What Triton calls for one model instance (a list of requests in, a list of output dicts out), with its own
    worker."""

    def __init__(self, served: ServedPackage, workers: Workers):
        self._served, self._workers = served, workers
        self.runner = workers.new()

    def ready_runner(self) -> Runner:
        """The instance's runner, with the standby worker in place of one that was stopped (a cancel or time-out
        kills it) or died: the request need not wait for a new worker's start."""
        if not self.runner.client.alive:
            self.runner.close()
            self.runner = self._workers.replacement()
            self.runner.ready(self._served.package, trust=True)
        return self.runner

    def __call__(self, requests) -> list:
        return [self._served.answer(self, request) for request in requests]


def volume_of(request) -> Volume:
    """The request's volume ([I, J, K, C], C = 1 for one image) on its grid; a missing or second volume is refused."""
    given = [name for name in request if name.startswith("volume_")]
    if len(given) != 1:
        raise InputError(f"a request needs exactly one of {', '.join(v2.volume_input(t) for t in v2.VOLUME_TYPES)}"
                            f"; it has {', '.join(given) or 'none'}")
    if v2.IJK_TO_RAS not in request:
        raise InputError("a request needs ijk_to_ras (FP64 [4, 4]): where the volume lies in RAS")
    array = request[given[0]]
    return Volume(array[..., 0] if array.shape[-1] == 1 else array, np.asarray(request[v2.IJK_TO_RAS], np.float64))
