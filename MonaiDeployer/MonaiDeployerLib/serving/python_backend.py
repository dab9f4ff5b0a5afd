"""The models of a repository ``export-triton`` wrote, as Triton's Python backend runs them: each model's
``model.py`` imports one of these classes as its ``TritonPythonModel``, from the copy of this library beside it.

Each instance (a backend stub process of its own) keeps a warm worker, and answers as ``serve`` does
(``served.ServedPackage``). What a repository cannot have of ``serve``: the runs model (each model runs in
processes of its own, so nothing could reach another's run) and so no cancel; and no standby worker, so a run past
its ``run_timeout_s`` costs the next request a worker's start.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from ..packages import open_package
from . import v2
from .in_flight import InFlight
from .served import ServedPackage
from .workers import Workers

CARD_FILE = "card.json"  # each model's card, which the catalogue model lists


class PackageModel:
    """One exported package: its parameters (``config.pbtxt``) say how to open the copy in ``package/`` and where
    its worker runs."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as backend

        self._backend = backend
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])
        package = open_package(_located(parameters["package"], here), parameters.get("mode") or None,
                               model=_located(parameters.get("model"), here),
                               runtime=parameters.get("runtime") or None,
                               entry_point=parameters.get("entry_point") == "true")
        workers = Workers(parameters.get("worker_python") or shutil.which("python3"),
                          parameters.get("device") or "auto", standby=False)
        self._served = ServedPackage(package, 1, workers, InFlight())  # Triton runs each instance in a stub of its own
        self._served.start()

    def execute(self, requests) -> list:
        return [self._response(self._served.answer(self._served.instances[0], _Request(self._backend, request)))
                for request in requests]

    def _response(self, outputs: dict):
        return self._backend.InferenceResponse(output_tensors=[self._backend.Tensor(name, array)
                                                               for name, array in outputs.items()])

    def finalize(self) -> None:
        self._served.close()


class CatalogueModel:
    """``CATALOGUE``: the cards of the models beside it in the repository, read once."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as backend

        self._backend = backend
        repository = os.path.dirname(os.path.normpath(args["model_repository"]))
        models = []
        for name in sorted(os.listdir(repository)):
            card = os.path.join(repository, name, CARD_FILE)
            if os.path.isfile(card):
                with open(card, encoding="utf-8") as stream:
                    models.append({"model": name, **json.load(stream)})
        self._cards = v2.json_tensor({"models": models})

    def execute(self, requests) -> list:
        return [self._backend.InferenceResponse(output_tensors=[self._backend.Tensor(v2.RESULT, self._cards)])
                for _request in requests]


class _Request:
    """A Python-backend request as ``ServedPackage.answer`` reads one (as PyTriton hands it): its inputs by name,
    and its parameters."""

    def __init__(self, backend, request):
        self._inputs = {}
        for name in (*(v2.volume_input(datatype) for datatype in v2.VOLUME_TYPES), v2.IJK_TO_RAS, v2.DESCRIBE):
            tensor = backend.get_input_tensor_by_name(request, name)
            if tensor is not None:
                self._inputs[name] = tensor.as_numpy()
        self.parameters = json.loads(request.parameters() or "{}")

    def __contains__(self, name: str) -> bool:
        return name in self._inputs

    def __getitem__(self, name: str) -> np.ndarray:
        return self._inputs[name]

    def __iter__(self):
        return iter(self._inputs)


def _located(path: str | None, folder: str) -> str | None:
    """A path the export wrote relative to the model's version folder (an image reference stays as it is)."""
    if not path:
        return None
    local = os.path.join(folder, path)
    return local if os.path.exists(local) else path
