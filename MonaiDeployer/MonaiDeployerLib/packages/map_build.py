"""Build a MAP-conformant image from a MONAI Deploy app and any base image that has its Python.

The app goes to ``/opt/holoscan/app``, its model to ``/opt/holoscan/models``, the manifests to
``/etc/holoscan/app.json`` and ``pkg.json``, with OCI labels and the ``HOLOSCAN_*`` variables, as
the MAP specification lays them out. The SDK's own packager needs docker buildx and NVIDIA base
images; this needs only ``docker build`` or ``podman build``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

from ..environment.containers import find_runtime
from ..errors import PackageError
from .deployapp import DeployKind
from .registry import open_package

APP_ROOT, MODEL_ROOT, WORK_ROOT = "/opt/holoscan/app", "/opt/holoscan/models", "/var/holoscan"
BUILD_SECONDS = 1800


def package_app(app_path: str, base_image: str, tag: str, runtime: str | None = None, model: str | None = None,
                python: str = "python3") -> str:
    """Build ``tag`` from the Deploy app at ``app_path`` on ``base_image``; ``python`` runs the app in the image."""
    package = open_package(app_path, mode=DeployKind.mode, model=model)
    runtime_path = find_runtime(runtime)
    model_name = os.path.basename(os.path.normpath(package.settings.model))
    app_file = os.path.basename(package.settings.app)
    with tempfile.TemporaryDirectory(prefix="monaideployer-package-") as context:
        _copy(os.path.dirname(package.settings.app) if os.path.isdir(app_path) else package.settings.app,
              os.path.join(context, "app", "" if os.path.isdir(app_path) else app_file))
        _copy(package.settings.model, os.path.join(context, "models", model_name))
        environment = {"HOLOSCAN_APPLICATION": APP_ROOT, "HOLOSCAN_INPUT_PATH": f"{WORK_ROOT}/input",
                       "HOLOSCAN_OUTPUT_PATH": f"{WORK_ROOT}/output", "HOLOSCAN_WORKDIR": WORK_ROOT,
                       "HOLOSCAN_MODEL_PATH": f"{MODEL_ROOT}/{model_name}"}
        command = [python, f"{APP_ROOT}/{app_file}"]
        _write_json(os.path.join(context, "app.json"), {
            "apiVersion": "1.0.0", "command": json.dumps(command), "environment": environment,
            "input": {"path": "input/", "formats": [package.settings.input_format]},
            "output": {"path": "output/", "formats": None}, "timeout": 0, "version": 1,
            "workingDirectory": WORK_ROOT})
        _write_json(os.path.join(context, "pkg.json"), {
            "apiVersion": "1.0.0", "applicationRoot": APP_ROOT, "modelRoot": MODEL_ROOT,
            "models": {os.path.splitext(model_name)[0]: f"{MODEL_ROOT}/{model_name}"},
            "resources": _resources(package), "version": 1})
        with open(os.path.join(context, "Containerfile"), "w", encoding="utf-8") as stream:
            stream.write(_containerfile(base_image, package, environment, command))
        finished = subprocess.run([runtime_path, "build", "-q", "-t", tag, "-f", os.path.join(context, "Containerfile"),
                                   context], capture_output=True, text=True, timeout=BUILD_SECONDS, check=False)
    if finished.returncode != 0:
        lines = [line for line in finished.stderr.splitlines() if line.strip()]
        raise PackageError(f"building {tag} failed: {' | '.join(lines[-3:]) or finished.returncode}")
    return tag


def _containerfile(base_image: str, package, environment: dict, command: list) -> str:
    variables = " ".join(f"{name}={value}" for name, value in environment.items())
    return (f"FROM {base_image}\n"
            f"COPY app {APP_ROOT}\n"
            f"COPY models {MODEL_ROOT}\n"
            "COPY app.json pkg.json /etc/holoscan/\n"
            f"ENV {variables}\n"
            f"LABEL org.opencontainers.image.title={json.dumps(package.name)} "
            f"org.opencontainers.image.version={json.dumps(package.version or '0.0.0')}\n"
            f"WORKDIR {WORK_ROOT}\n"
            f"CMD {json.dumps(command)}\n")


def _resources(package) -> dict:
    """What the app's ``app.yaml`` asks for (cpu, gpu, memory, sharedMemory), else one CPU and no GPU."""
    from .deployapp_files import read_app_yaml

    declared = read_app_yaml(package.path).get("resources") or {}
    resources = {"cpu": 1, "gpu": 0}
    resources.update({key: value for key, value in declared.items() if key in ("cpu", "gpu", "memory", "sharedMemory")})
    return resources


def _copy(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target) or target, exist_ok=True)
    if os.path.isdir(source):
        shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(source, target)


def _write_json(path: str, document: dict) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(document, stream, indent=2)
