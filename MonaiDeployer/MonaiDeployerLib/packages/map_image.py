"""MONAI Application Packages (MAPs) as images: what an image says about itself, read before it runs.

A MAP carries two manifests, ``/etc/holoscan/app.json`` (command, input and output paths and
formats, environment) and ``/etc/holoscan/pkg.json`` (resources: CPUs, GPUs, memory, shared
memory; where the models are), and OCI labels (title, version); a MONAI Deploy app's
``app.yaml`` in the application folder names its labels. They are read from a created, never
started, container, which is removed again.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field

from ..environment.containers import cuda_verdict, find_runtime, forward_compatible_drivers, image_cuda, read_host_gpus
from ..errors import NotAMapError, PackageError
from .deployapp_files import declared_labels, read_app_yaml

APP_MANIFEST = "/etc/holoscan/app.json"
PACKAGE_MANIFEST = "/etc/holoscan/pkg.json"
DEFAULT_INPUT, DEFAULT_OUTPUT = "/var/holoscan/input", "/var/holoscan/output"
DEFAULT_APPLICATION, DEFAULT_MODELS = "/opt/holoscan/app", "/opt/holoscan/models"
TITLE_LABEL, VERSION_LABEL = "org.opencontainers.image.title", "org.opencontainers.image.version"
COMMAND_SECONDS = 120
ASK_THIS_COMPUTER = object()  # MapFacts.verdict's default: run nvidia-smi (a backend passes what it read once)


@dataclass
class MapFacts:
    """What a MAP image declares: names, where it reads and writes, what it needs."""

    reference: str
    image_id: str
    title: str
    version: str
    input_path: str
    output_path: str
    input_formats: list
    output_formats: list
    resources: dict
    environment: dict
    cuda: tuple | None
    is_map: bool = True
    compatible_drivers: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    app_manifest: dict = field(default_factory=dict)
    package_manifest: dict = field(default_factory=dict)

    @property
    def command(self) -> list:
        """The app's command line from ``app.json`` (a JSON list written as a string, or a list)."""
        command = self.app_manifest.get("command") or []
        if isinstance(command, str):
            try:
                command = json.loads(command)
            except json.JSONDecodeError:
                command = command.split()
        return [str(part) for part in command] if isinstance(command, list) else []

    @property
    def model_path(self) -> str:
        """What the app gets as its model path: ``HOLOSCAN_MODEL_PATH``, else the package's model root."""
        return (self.environment.get("HOLOSCAN_MODEL_PATH") or self.package_manifest.get("modelRoot")
                or DEFAULT_MODELS)

    @property
    def reads_dicom(self) -> bool:
        return any("dicom" in str(entry).lower() for entry in self.input_formats)

    def verdict(self, host=ASK_THIS_COMPUTER, gpu_requested: bool = True):
        """Whether it can use the GPUs of ``host`` (parsed nvidia-smi, None for none; default: ask this computer)."""
        return cuda_verdict(self.cuda, read_host_gpus() if host is ASK_THIS_COMPUTER else host, gpu_requested,
                            self.compatible_drivers)


def inspect_map(runtime: str, reference: str, container: str | None = None, scratch: str | None = None,
                entry_point: bool = False) -> MapFacts:
    """Read an image's labels, environment and MAP manifests; refuse an image that is not a MAP, unless
    ``entry_point`` (the user asked to run its own entry point anyway).

    ``container`` names the short-lived container the manifests are copied from, and ``scratch`` is
    a folder for the copies, so that whoever stops this process can remove both.
    """
    image = image_description(runtime, reference)
    config = image.get("Config") or {}
    environment = dict(entry.split("=", 1) for entry in config.get("Env") or [] if "=" in entry)
    labels = config.get("Labels") or {}
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix="monaideployer-map-") as folder:
            app_manifest, package_manifest, app_yaml = _read_manifests(runtime, reference, container, folder,
                                                                       entry_point)
    else:
        app_manifest, package_manifest, app_yaml = _read_manifests(runtime, reference, container, scratch, entry_point)
    working = app_manifest.get("workingDirectory") or environment.get("HOLOSCAN_WORKDIR", "/var/holoscan")
    input_path = _section(app_manifest, "input").get("path") or environment.get("HOLOSCAN_INPUT_PATH")
    output_path = _section(app_manifest, "output").get("path") or environment.get("HOLOSCAN_OUTPUT_PATH")
    return MapFacts(
        reference=reference,
        image_id=str(image.get("Id", "")),
        title=str(labels.get(TITLE_LABEL) or reference),
        version=str(labels.get(VERSION_LABEL) or ""),
        input_path=_absolute(input_path, working, DEFAULT_INPUT),
        output_path=_absolute(output_path, working, DEFAULT_OUTPUT),
        input_formats=list(_section(app_manifest, "input").get("formats") or []),
        output_formats=list(_section(app_manifest, "output").get("formats") or []),
        resources=dict(package_manifest.get("resources") or {}),
        environment=environment,
        cuda=image_cuda(environment),
        is_map=bool(app_manifest),
        compatible_drivers=forward_compatible_drivers(environment),
        labels=declared_labels(app_yaml),
        app_manifest=app_manifest,
        package_manifest=package_manifest,
    )


def inspect_package(package) -> MapFacts:
    """``inspect_map`` of the image a MAP package names, with the package's runtime and entry-point choice."""
    return inspect_map(find_runtime(package.settings.runtime), package.path,
                       entry_point=package.settings.entry_point)


def describe_map(facts: MapFacts, verdict) -> list:
    """What a user should know before running an image, as (heading, text) pairs: ``inspect`` and the panel's card."""
    facts_list = [("image", facts.reference)]
    if not facts.is_map:
        facts_list.append(("not a MAP", "no MAP manifests: its own entry point runs, cold"))
    facts_list += [
        ("input", f"{facts.input_path} ({', '.join(facts.input_formats) or 'formats not declared'})"),
        ("output", f"{facts.output_path} ({', '.join(facts.output_formats) or 'formats not declared'})"),
        ("resources", ", ".join(f"{name} {value}" for name, value in facts.resources.items()) or "not declared"),
        ("needs CUDA", ".".join(map(str, facts.cuda)) if facts.cuda else "no"),
        ("labels", ", ".join(f"{value}={name}" for value, name in sorted(facts.labels.items())) or "not declared"),
        ("runs code", "yes, in a container: no network, no capabilities, only its input and output folders"),
        ("verdict", verdict.text),
    ]
    return facts_list


def image_description(runtime: str, reference: str) -> dict:
    """``image inspect``'s description of an image (its ``Id``, ``Config``...); "image not found" when there is none."""
    finished = _run([runtime, "image", "inspect", reference])
    if finished.returncode != 0:
        raise PackageError(f"image not found: {reference} ({_last_line(finished)}); build or pull it first")
    try:
        return json.loads(finished.stdout)[0]
    except (json.JSONDecodeError, IndexError, KeyError) as error:
        raise PackageError(f"{runtime} image inspect {reference} gave no image description") from error


def _read_manifests(runtime: str, reference: str, name: str | None, folder: str, entry_point: bool) -> tuple:
    """The two manifests and the app's ``app.yaml`` ({} without one), copied out of a created (not started)
    container that is removed afterwards; without manifests, three {} when ``entry_point``."""
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
                if entry_point and not manifests:
                    return {}, {}, {}
                raise NotAMapError(f"{reference} is not a MONAI Application Package: it has no {source}; its own "
                                   "entry point can still run, cold, with the volume in /var/holoscan/input (or its "
                                   "HOLOSCAN_INPUT_PATH) and labelmaps read from /var/holoscan/output "
                                   "(--entry-point, or entry_point=True)")
            manifests.append(_read_json(target, source))
        application = manifests[1].get("applicationRoot") or DEFAULT_APPLICATION
        app_yaml = os.path.join(folder, "app.yaml")
        if _run([runtime, "cp", f"{container}:{application}/app.yaml", app_yaml]).returncode == 0:
            manifests.append(read_app_yaml(folder))
        else:
            manifests.append({})
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
