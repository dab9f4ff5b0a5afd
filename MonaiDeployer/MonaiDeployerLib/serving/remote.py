"""The client of a v2 server that ``serve`` started (or a Triton serving an ``export-triton`` repository): its
models, and runs that come back as the same ``Result`` a local run gives. The standard library and numpy alone."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import urllib.parse
import uuid
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, MonaiDeployerError, PackageError, WorkerError
from ..imageio.volume import Volume, check_volume
from ..packages import open_package
from ..runs.runner import Result
from . import v2
from .served import served_hash

TOKEN_VARIABLE = "MONAIDEPLOYER_SERVER_TOKEN"
CALL_SECONDS = 30  # a card, the models, a cancel
QUEUE_SECONDS = 60  # beyond a run's own time-out: the wait in the server's queue, and the transfers


@dataclass
class ServedModel:
    """A served model as its card describes it: what the outputs need of a package (its name, version, labels,
    colours, and whether its segments overlap)."""

    model: str
    name: str
    version: str
    mode: str
    labels: dict
    colors: dict
    outputs_overlap: bool
    hash: str = ""
    description: str = ""

    @classmethod
    def from_card(cls, model: str, card: dict) -> ServedModel:
        return cls(model, card["name"], card.get("version", ""), card["mode"],
                   {int(value): name for value, name in card["labels"].items()},
                   {int(value): tuple(color) for value, color in card.get("colors", {}).items()},
                   bool(card.get("overlapping")), card.get("hash", ""), card.get("description", ""))


class RemoteServer:
    """A server at ``url`` (``http://host:port``); ``timeout``: the seconds to wait for any answer but a run's."""

    def __init__(self, url: str, timeout: float | None = CALL_SECONDS, token: str | None = None):
        """``token``: sent as ``Authorization: Bearer`` to a proxy in front of the server (default: the environment's
        ``MONAIDEPLOYER_SERVER_TOKEN``; Triton itself checks nobody)."""
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        try:
            parsed.port  # noqa: B018  (a port that is not a number, or over 65535, raises here)
        except ValueError:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InputError(f"not a server URL: {url} (expected http://host:port)")
        self.url = f"{parsed.scheme}://{parsed.netloc}"
        self._parsed = parsed
        self._timeout = timeout
        self._token = token or os.environ.get(TOKEN_VARIABLE) or None
        self._grpc_port = None  # from the catalogue, once asked for

    def grpc_address(self) -> str | None:
        """Where the server streams runs' progress over gRPC (``host:port``, the URL's host and the port its catalogue
        gives), or None: a server that gives none, or one behind a TLS proxy or with a token (the stream would go
        round the proxy, which sees only HTTP)."""
        if self._parsed.scheme != "http" or self._token:
            return None
        if self._grpc_port is None:
            self.models()
        if not self._grpc_port:
            return None
        host = self._parsed.hostname
        return f"[{host}]:{self._grpc_port}" if ":" in host else f"{host}:{self._grpc_port}"

    def models(self) -> list[dict]:
        """Each served model's name and card (the package's name, version, mode, labels, hash)."""
        outputs = self._infer(v2.CATALOGUE, {v2.DESCRIBE: np.array([b"models"], dtype=np.object_)}, (v2.RESULT,))
        catalogue = self._answer(lambda: dict(v2.json_of(outputs[v2.RESULT])))
        self._grpc_port = catalogue.get("grpc_port", 0)
        return self._answer(lambda: list(catalogue["models"]))

    def card(self, model: str) -> dict:
        outputs = self._infer(model, {v2.DESCRIBE: np.array([b"card"], dtype=np.object_)})
        document = self._answer(lambda: dict(v2.json_of(outputs[v2.RESULT])))
        v2.raise_error(document)
        return document

    def describe(self, model: str) -> ServedModel:
        card = self.card(model)
        return self._answer(lambda: ServedModel.from_card(model, card))

    def find(self, package_or_model) -> str:
        """The served model named, or the one serving the same package as a ``PackageInfo`` (or the path of one,
        opened with its defaults), matched by content hash."""
        models = self.models()
        if isinstance(package_or_model, str) and any(model["model"] == package_or_model for model in models):
            return package_or_model
        if not isinstance(package_or_model, str) or os.path.exists(package_or_model):
            package = package_or_model if not isinstance(package_or_model, str) else open_package(package_or_model)
            wanted = served_hash(package)
            for model in models:
                if model.get("hash") == wanted:
                    return model["model"]
            raise PackageError(f"the server at {self.url} does not serve {package.path} (no model has its "
                               f"content); it serves: {_names(models)}")
        raise PackageError(f"the server at {self.url} serves no model {package_or_model}; it serves: "
                           f"{_names(models)}")

    def _answer(self, read):
        """``read()`` of an answer, or one line saying that what answered is not this project's v2 server."""
        try:
            return read()
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise WorkerError(f"{self.url} did not answer as a MonaiDeployer v2 server ({type(error).__name__}: "
                              f"{error})") from error

    def run(self, model: str, volume: Volume, timeout: float | None = None, run_id: str | None = None) -> Result:
        """Segment ``volume`` with the served ``model``; the labelmap lies on the volume's grid.

        ``timeout``: the seconds the run may take on the server, which then stops it (this side waits
        ``QUEUE_SECONDS`` more for the answer). ``run_id`` names the run for ``state`` and ``cancel`` from another
        thread (default: a new id). Interrupted here (Ctrl+C, this side's time-out), the run is cancelled there.
        """
        check_volume(volume)
        array = v2.as_sent(volume.array)
        run_id = run_id or uuid.uuid4().hex
        parameters = {v2.RUN_ID: run_id, **({v2.RUN_TIMEOUT: float(timeout)} if timeout else {})}
        try:
            outputs = self._infer(model, {v2.volume_input(v2.datatype_of(array)): v2.channels_last(array),
                                          v2.IJK_TO_RAS: np.asarray(volume.ijk_to_ras, np.float64)},
                                  parameters=parameters, wait=math.inf if timeout is None else timeout + QUEUE_SECONDS)
        except BaseException:
            with contextlib.suppress(MonaiDeployerError):  # a server that cannot be reached has no run to stop
                self.cancel_run(run_id)
            raise
        document = self._answer(lambda: dict(v2.json_of(outputs[v2.RESULT])))
        v2.raise_error(document)
        labelmap = self._answer(lambda: outputs[v2.LABELMAP])
        if labelmap.shape[:3] != volume.shape[:3]:
            raise WorkerError(f"the server's labelmap {labelmap.shape[:3]} does not fit the input's grid "
                              f"{volume.shape[:3]}")
        labelmap = labelmap if document.get("overlapping") else labelmap[..., 0]
        return self._answer(lambda: Result(
            labelmap=Volume(np.array(labelmap), volume.ijk_to_ras.copy()),
            labels={int(value): name for value, name in document["labels"].items()},
            colors={int(value): tuple(color) for value, color in document.get("colors", {}).items()},
            timings=document.get("timings", {}), notes=list(document.get("notes", [])), name=model))

    def cancel_run(self, run_id: str) -> dict:
        """Stop the run ``run_id`` on the server now (its worker is killed and the standby takes its place), or as it
        starts if it is still queued; its state as the cancel found it."""
        return self._run_action("cancel", run_id)

    def run_state(self, run_id: str) -> dict:
        """Whether the run ``run_id`` is running, and its stage and fraction done."""
        return self._run_action("state", run_id)

    def _run_action(self, action: str, run_id: str) -> dict:
        outputs = self._infer(v2.RUNS, {v2.RUN_ID: np.array([run_id.encode()], dtype=np.object_),
                                        v2.ACTION: np.array([action.encode()], dtype=np.object_)}, (v2.RESULT,))
        document = self._answer(lambda: dict(v2.json_of(outputs[v2.RESULT])))
        v2.raise_error(document)
        return document

    def _infer(self, model: str, tensors: dict, outputs: tuple = (v2.LABELMAP, v2.RESULT),
               parameters: dict | None = None, wait: float | None = None) -> dict:
        """``wait``: the seconds to wait for the answer (default: this client's ``timeout``; ``math.inf``: no limit)."""
        parts, header_length = v2.encode(tensors, outputs, parameters)
        headers, answer = self._request(
            "POST", f"/v2/models/{urllib.parse.quote(model, safe='')}/infer", parts,
            {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length),
             "Content-Length": str(sum(len(part) for part in parts))}, model, wait)
        length = headers.get("Inference-Header-Content-Length")
        return self._answer(lambda: v2.decode(answer, int(length) if length is not None else None))

    def _request(self, method: str, path: str, body: list, headers: dict | None = None,
                 model: str | None = None, wait: float | None = None) -> tuple:
        connection_type = http.client.HTTPSConnection if self._parsed.scheme == "https" else http.client.HTTPConnection
        wait = self._timeout if wait is None else None if wait == math.inf else wait
        connection = connection_type(self._parsed.hostname, self._parsed.port, timeout=wait)
        try:
            authorised = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            connection.request(method, path, body, {**(headers or {}), **authorised})
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as error:  # refused, unreachable, timed out, cut off
            reason = "timed out" if isinstance(error, TimeoutError) else \
                " ".join(str(getattr(error, "strerror", None) or error).split())
            raise WorkerError(f"cannot reach the server at {self.url}: {reason}") from error
        finally:
            connection.close()
        if response.status != 200:
            raise _refusal(self.url, model, response.status, answer)
        return response.headers, answer


def _refusal(url: str, model: str | None, status: int, answer: bytes) -> MonaiDeployerError:
    """An HTTP error as one line: the model unknown, the input refused, or the server not ready."""
    try:
        message = json.loads(answer).get("error", "")
    except (ValueError, AttributeError):
        message = answer.decode(errors="replace")
    message = v2.one_line(message)  # the server's traceback is not the client's
    if model is not None and ("unknown model" in message or "not found" in message):
        return PackageError(f"the server at {url} serves no model {model} (see: models --server {url})")
    if status in (401, 403):
        return WorkerError(f"the server at {url} refused the credentials (HTTP {status}): set {TOKEN_VARIABLE} to "
                           "a token its proxy accepts")
    if status == 400:
        return InputError(f"the server refused the input: {message}")
    if status == 503 or "not ready" in message:
        return WorkerError(f"the server at {url} is not ready (starting or restarting): {message}")
    return WorkerError(f"the server at {url} answered HTTP {status}: {message}")


def _names(models: list) -> str:
    return ", ".join(model["model"] for model in models) or "nothing"
