"""MONAI Application Packages (MAPs) as images: what an image says about itself, read before it runs.

A MAP carries two manifests, ``/etc/holoscan/app.json`` (command, input and output paths and
formats, environment) and ``/etc/holoscan/pkg.json`` (resources: CPUs, GPUs, memory, shared
memory; where the models are), and OCI labels (title, version). They are read from a created,
never started, container, which is removed again.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field

from .containers import cuda_verdict, image_cuda, read_host_gpus
from .errors import PackageError

APP_MANIFEST = "/etc/holoscan/app.json"
PACKAGE_MANIFEST = "/etc/holoscan/pkg.json"
DEFAULT_INPUT, DEFAULT_OUTPUT = "/var/holoscan/input", "/var/holoscan/output"
TITLE_LABEL, VERSION_LABEL = "org.opencontainers.image.title", "org.opencontainers.image.version"
COMMAND_SECONDS = 120


@dataclass
class MapFacts:
    """What a MAP image declares: names, where it reads and writes, what it needs."""

    reference: str
    title: str
    version: str
    input_path: str
    output_path: str
    input_formats: list
    output_formats: list
    resources: dict
    environment: dict
    cuda: tuple | None
    app_manifest: dict = field(default_factory=dict)
    package_manifest: dict = field(default_factory=dict)

    def verdict(self, host=None, gpu_requested: bool = True):
        """Whether it can use this computer's GPU (``host``: parsed nvidia-smi; default: ask this computer)."""
        return cuda_verdict(self.cuda, host if host is not None else read_host_gpus(), gpu_requested)


def inspect_map(runtime: str, reference: str, container: str | None = None, scratch: str | None = None) -> MapFacts:
    """Read an image's labels, environment and MAP manifests; refuse an image that is not a MAP.

    ``container`` names the short-lived container the manifests are copied from, and ``scratch`` is
    a folder for the copies, so that whoever stops this process can remove both.
    """
    image = _image_inspect(runtime, reference)
    config = image.get("Config") or {}
    environment = dict(entry.split("=", 1) for entry in config.get("Env") or [] if "=" in entry)
    labels = config.get("Labels") or {}
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix="monaideployer-map-") as folder:
            app_manifest, package_manifest = _read_manifests(runtime, reference, container, folder)
    else:
        app_manifest, package_manifest = _read_manifests(runtime, reference, container, scratch)
    working = app_manifest.get("workingDirectory") or environment.get("HOLOSCAN_WORKDIR", "/var/holoscan")
    return MapFacts(
        reference=reference,
        title=str(labels.get(TITLE_LABEL) or reference),
        version=str(labels.get(VERSION_LABEL) or ""),
        input_path=_absolute(_section(app_manifest, "input").get("path"), working, DEFAULT_INPUT),
        output_path=_absolute(_section(app_manifest, "output").get("path"), working, DEFAULT_OUTPUT),
        input_formats=list(_section(app_manifest, "input").get("formats") or []),
        output_formats=list(_section(app_manifest, "output").get("formats") or []),
        resources=dict(package_manifest.get("resources") or {}),
        environment=environment,
        cuda=image_cuda(environment),
        app_manifest=app_manifest,
        package_manifest=package_manifest,
    )


def _image_inspect(runtime: str, reference: str) -> dict:
    finished = _run([runtime, "image", "inspect", reference])
    if finished.returncode != 0:
        raise PackageError(f"image not found: {reference} ({_last_line(finished)}); build or pull it first")
    try:
        return json.loads(finished.stdout)[0]
    except (json.JSONDecodeError, IndexError, KeyError) as error:
        raise PackageError(f"{runtime} image inspect {reference} gave no image description") from error


def _read_manifests(runtime: str, reference: str, name: str | None, folder: str) -> tuple:
    """The two manifests, copied out of a created (not started) container that is removed afterwards."""
    naming = ["--name", name] if name else []
    created = _run([runtime, "create", *naming, reference, "true"])  # a command for images without one; never started
    if created.returncode != 0:
        raise PackageError(f"cannot read {reference}'s files: {_last_line(created)}")
    container = created.stdout.strip().splitlines()[-1]
    try:
        manifests = []
        for source in (APP_MANIFEST, PACKAGE_MANIFEST):
            target = os.path.join(folder, os.path.basename(source))
            if _run([runtime, "cp", f"{container}:{source}", target]).returncode != 0:
                raise PackageError(f"{reference} is not a MONAI Application Package: it has no {source}")
            manifests.append(_read_json(target, source))
        return tuple(manifests)
    finally:
        _run([runtime, "rm", "--force", container])


def _read_json(path: str, name: str) -> dict:
    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except (OSError, json.JSONDecodeError) as error:
        raise PackageError(f"{name} in the image is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise PackageError(f"{name} in the image must hold a JSON object")
    return document


def _section(manifest: dict, key: str) -> dict:
    value = manifest.get(key)
    return value if isinstance(value, dict) else {}


def _absolute(path: str | None, working: str, default: str) -> str:
    if not path:
        return default
    return path if path.startswith("/") else os.path.normpath(os.path.join(working, path))


def _run(command: list) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_SECONDS,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as error:
        raise PackageError(f"{' '.join(command[:3])} did not answer within {COMMAND_SECONDS} s") from error


def _last_line(finished: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (finished.stderr or finished.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {finished.returncode}"
