"""``export-triton``: a standard Triton model repository, which NVIDIA's Triton container (or any ``tritonserver``
with the Python backend) serves unchanged, with the same models, names and protocol as ``serve``.

Each package becomes ``NAME/config.pbtxt`` (the v2 inputs and outputs, one instance group, the parameters that say
how to open the package) and ``NAME/1/``: ``model.py`` (which imports ``python_backend``), a copy of this library,
the package's files in ``package/``, and its card. ``monaideployer-models`` lists every model in the repository,
so a later export into the same repository adds to it. The serving host needs the workers' Python (torch, MONAI,
and what the package requires) and, for a MAP, the image.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from ..errors import OutputError
from . import v2
from .python_backend import CARD_FILE
from .served import package_card, served_name

LIBRARY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # MonaiDeployerLib
VERSION = "1"
PACKAGE_FOLDER = "package"
MODEL_PY = '''"""Written by MonaiDeployer's export-triton: the model runs in the worker of the library beside it."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from MonaiDeployerLib.serving.python_backend import {role} as TritonPythonModel  # noqa: E402,F401
'''
TRITON_TYPES = {"BYTES": "TYPE_STRING"}


def export_repository(packages: list, folder: str, instances: int = 1, python: str | None = None,
                      device: str = "auto", options: dict | None = None) -> list[str]:
    """Write each package's model into ``folder`` (made if need be; a model of the same name, which is the same
    content, is replaced whole) and the catalogue; returns the models' names. ``options``: how the packages were
    opened (mode, runtime, entry point), for the repository's copies to open alike."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot make the model repository {folder}: {error.strerror}") from error
    names = []
    for package in packages:
        name = served_name(package)
        _write_whole(folder, name, lambda model_folder, package=package, name=name: _write_package_model(
            model_folder, name, package, instances, python, device, options or {}))
        names.append(name)
    _write_whole(folder, v2.CATALOGUE, _write_catalogue)
    return names


def _write_whole(folder: str, name: str, write) -> None:
    """``write(model_folder)`` into a folder beside the repository's models, then put in place: Triton never sees a
    half-written model, nor one left by a failed export."""
    building = tempfile.mkdtemp(prefix=f".{name}-", dir=folder)
    try:
        write(building)
        target = os.path.join(folder, name)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.rename(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _write_package_model(model_folder: str, name: str, package, instances: int, python: str | None, device: str,
                         options: dict) -> None:
    version = os.path.join(model_folder, VERSION)
    os.makedirs(os.path.join(version, PACKAGE_FOLDER))
    _copy_library(version)
    parameters = {"mode": package.mode, "device": device, "worker_python": python or "",
                  "runtime": options.get("runtime") or "", "entry_point": "true" if options.get("entry_point") else ""}
    parameters["package"] = _copy_package(package, version) if package.kind.on_disk else package.path
    model = package.to_dict()["settings"].get("model")
    if isinstance(model, str) and os.path.exists(model):  # a Deploy app's model, given with --model
        parameters["model"] = _copy(model, version)
    inputs = [_tensor(v2.volume_input(datatype), datatype, "[ -1, -1, -1, -1 ]") for datatype in v2.VOLUME_TYPES]
    inputs += [_tensor(v2.IJK_TO_RAS, "FP64", "[ 4, 4 ]"), _tensor(v2.DESCRIBE, "BYTES", "[ 1 ]")]
    labelmap_type = v2.labelmap_datatype(package.labels, package.outputs_overlap)
    outputs = [_tensor(v2.LABELMAP, labelmap_type, "[ -1, -1, -1, -1 ]", optional=False),
               _tensor(v2.RESULT, "BYTES", "[ 1 ]", optional=False)]
    kind = "KIND_GPU" if device == "cuda" else "KIND_CPU"
    _write_text(os.path.join(model_folder, "config.pbtxt"), "\n".join([
        f'name: "{name}"', 'backend: "python"', "max_batch_size: 0",
        "input [\n" + ",\n".join(inputs) + "\n]", "output [\n" + ",\n".join(outputs) + "\n]",
        f"instance_group [ {{ count: {instances} kind: {kind} }} ]",
        *(f'parameters: {{ key: "{key}" value: {{ string_value: {json.dumps(value)} }} }}'
          for key, value in parameters.items()), ""]))
    _write_text(os.path.join(version, "model.py"), MODEL_PY.format(role="PackageModel"))
    _write_text(os.path.join(model_folder, CARD_FILE), json.dumps(package_card(package), indent=2))


def _write_catalogue(model_folder: str) -> None:
    version = os.path.join(model_folder, VERSION)
    os.makedirs(version)
    _copy_library(version)
    _write_text(os.path.join(model_folder, "config.pbtxt"), "\n".join([
        f'name: "{v2.CATALOGUE}"', 'backend: "python"', "max_batch_size: 0",
        "input [\n" + _tensor(v2.DESCRIBE, "BYTES", "[ 1 ]", optional=False) + "\n]",
        "output [\n" + _tensor(v2.RESULT, "BYTES", "[ 1 ]", optional=False) + "\n]",
        "instance_group [ { count: 1 kind: KIND_CPU } ]", ""]))
    _write_text(os.path.join(version, "model.py"), MODEL_PY.format(role="CatalogueModel"))


def _tensor(name: str, datatype: str, dims: str, optional: bool = True) -> str:
    kind = TRITON_TYPES.get(datatype, f"TYPE_{datatype}")
    return f'  {{ name: "{name}" data_type: {kind} dims: {dims}' + (" optional: true" if optional else "") + " }"


def _copy_library(version: str) -> None:
    shutil.copytree(LIBRARY, os.path.join(version, "MonaiDeployerLib"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _copy_package(package, version: str) -> str:
    """The package's files (a TorchScript file with its sidecar, a bundle, a Deploy app) in ``package/``; returns
    the copy's path relative to the version folder."""
    copied = _copy(package.path, version)
    if package.sidecar and os.path.exists(package.sidecar):
        _copy(package.sidecar, version)
    return copied


def _copy(path: str, version: str) -> str:
    relative = os.path.join(PACKAGE_FOLDER, os.path.basename(os.path.normpath(path)))
    target = os.path.join(version, relative)
    if os.path.isdir(path):
        shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(path, target)
    return relative


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)
