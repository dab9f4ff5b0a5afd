"""Detect and describe a model package: its deployment mode, name, version, labels and requirements.

Nothing here imports torch: a package is inspected from its files alone, so that Slicer's panel
and ``inspect`` answer at once.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import asdict, dataclass, field

from ..errors import PackageError
from . import bundle_files as bundles
from . import deployapp_files as deployapps
from . import sidecar, trust

MODES = ("torchscript", "bundle", "deploy", "map")
LAUNCHES = ("warm", "cold")
DEPLOY_SDK_REQUIREMENT = {"monai-deploy-app-sdk": ">=0.6"}  # Holoscan-based releases
TORCHSCRIPT_SUFFIXES = (".zip", ".ts", ".pt", ".pth")
IMAGE_REFERENCE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)


@dataclass
class PackageInfo:
    """What the user picked, as the worker and the panel need it."""

    path: str
    mode: str
    name: str
    version: str = ""
    description: str = ""
    labels: dict = field(default_factory=dict)
    colors: dict = field(default_factory=dict)
    requirements: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    sidecar: str = ""
    content_hash: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, document: dict) -> PackageInfo:
        document = dict(document)
        for key in ("labels", "colors"):
            document[key] = {int(value): entry for value, entry in document.get(key, {}).items()}
        document["colors"] = {value: tuple(color) for value, color in document["colors"].items()}
        return cls(**document)


def open_package(path_or_reference, mode: str | None = None, model: str | None = None, launch: str = "warm",
                 input_format: str | None = None, runtime: str | None = None, entry_point: bool = False) -> PackageInfo:
    """Describe a model package; ``mode`` overrides detection ("torchscript", "bundle", "deploy", "map").

    For a MONAI Deploy app, ``model`` names the model it gets with ``-m`` when the package holds none
    (or another one), and ``launch`` is "warm" (the worker re-runs the imported app) or "cold"
    (``python app.py -i -o -m`` in a new process each run, for apps that do not survive re-runs);
    ``input_format`` ("nifti" or "dicom") overrides what the app's ``app.yaml`` or code says it reads.
    For a MAP, ``runtime`` ("docker" or "podman") picks the container runtime (default: the first that answers),
    ``launch`` is "warm" (one container kept running) or "cold" (a container per run), and ``input_format``
    overrides what its manifest says it reads; ``entry_point`` runs an image that is not a MAP (no manifests)
    through its own entry point, cold.
    """
    if launch not in LAUNCHES:
        raise PackageError(f"unknown launch {launch!r} (use {' or '.join(LAUNCHES)})")
    if mode not in (None, "auto", *MODES):
        raise PackageError(f"unknown mode {mode!r} (use auto, {', '.join(MODES)})")
    location = os.fspath(path_or_reference)
    detected = detect_mode(location)
    mode = detected if mode in (None, "auto") else mode
    if mode != detected and "map" in (mode, detected):
        raise PackageError(f"{location} is a {detected} package, it cannot run in {mode} mode")
    if input_format not in (None, *deployapps.INPUT_FORMATS):
        raise PackageError(f"unknown input format {input_format!r} (use {' or '.join(deployapps.INPUT_FORMATS)})")
    if mode == "deploy":
        return _describe_deploy(location, model, launch, input_format)
    if mode == "map":
        return PackageInfo(path=location, mode="map", name=location,
                           settings={"runtime": runtime, "launch": "cold" if entry_point else launch,
                                     "input_format": input_format, "entry_point": entry_point})
    describe = {"torchscript": _describe_torchscript, "bundle": _describe_bundle}[mode]
    return describe(location)


def detect_mode(location: str) -> str:
    """Tell a package's kind from what is on disk (or that it names a container image)."""
    if os.path.isdir(location):
        if os.path.isdir(os.path.join(location, "configs")):
            return "bundle"
        if any(os.path.isfile(os.path.join(location, name)) for name in ("app.py", "__main__.py")):
            return "deploy"
        raise PackageError(f"{location} is not a model package: no configs/ folder (MONAI Bundle) "
                           "and no app.py or __main__.py (MONAI Deploy app)")
    if os.path.isfile(location):
        if location.endswith(".py"):
            return "deploy"
        return _detect_archive_mode(location)
    if IMAGE_REFERENCE.match(location) and not location.endswith((*TORCHSCRIPT_SUFFIXES, ".py", ".json")):
        return "map"
    raise PackageError(f"model package not found: {location}")


def _detect_archive_mode(path: str) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        if _starts_with_zip_signature(path):
            raise PackageError(f"{path} is a corrupt zip file (truncated or damaged)") from None
        raise PackageError(f"{path} is not a model file: expected a TorchScript file (a zip archive), "
                           "a MONAI Bundle or a MONAI Deploy app") from None
    except OSError as error:
        raise PackageError(f"cannot read {path}: {error.strerror}") from error
    if any("configs/" in name or name.endswith("/extra/metadata.json") for name in names):
        return "bundle"
    if any(name.endswith("/data.pkl") for name in names) and any("/code/" in name for name in names):
        return "torchscript"
    if any(name.endswith("/data.pkl") for name in names):
        raise PackageError(f"{path} is a PyTorch checkpoint (torch.save), not TorchScript: "
                           "export the model with torch.jit.script(model).save(path)")
    raise PackageError(f"{path} is a zip file but not a TorchScript model or a MONAI Bundle")


def _starts_with_zip_signature(path: str) -> bool:
    with open(path, "rb") as stream:
        return stream.read(4) == b"PK\x03\x04"


def _describe_torchscript(path: str) -> PackageInfo:
    if not os.path.isfile(path):
        raise PackageError(f"a TorchScript package is a single file: {path}")
    sidecar_file = sidecar.sidecar_path_for(path)
    if os.path.isfile(sidecar_file):
        described = sidecar.read_sidecar(sidecar_file)
    else:
        described = sidecar.parse_sidecar({})
        sidecar_file = ""
    stem = os.path.splitext(os.path.basename(path))[0]
    return PackageInfo(
        path=os.path.abspath(path),
        mode="torchscript",
        name=described["name"] or stem,
        version=described["version"],
        description=described["description"],
        labels=described["labels"],
        colors=described["colors"],
        requirements=described["requirements"] or {"torch": ">=1.6"},
        settings=described["settings"],
        sidecar=sidecar_file,
    )


def _describe_bundle(path: str) -> PackageInfo:
    """Requirements: the metadata's, and any package the config's transforms need that it does not list (no
    version: MONAI asks for none that matters), named in ``settings["needed_by"]`` with the transforms."""
    metadata, inference, form = bundles.read_bundle_metadata(path)
    requirements = bundles.bundle_requirements(metadata)
    needed_by = bundles.undeclared_needs(path, inference, requirements)
    requirements.update(dict.fromkeys(needed_by, ""))
    settings = {"form": form, "inference_config": inference, "outputs_overlap": bundles.outputs_overlap(metadata),
                "made_with": bundles.made_with(metadata), **bundles.bundle_inputs(metadata)}
    if needed_by:
        settings["needed_by"] = needed_by
    return _code_package(path, "bundle", metadata, "name", labels=bundles.bundle_labels(metadata),
                         requirements=requirements, settings=settings)


def _describe_deploy(path: str, model: str | None, launch: str, input_format: str | None) -> PackageInfo:
    app = deployapps.app_file(path)
    app_yaml = deployapps.read_app_yaml(path)
    application = app_yaml.get("application") if isinstance(app_yaml.get("application"), dict) else {}
    cold_because = deployapps.warm_obstacle(app) if launch == "warm" else None
    return _code_package(
        path, "deploy", application, "title",
        labels=deployapps.declared_labels(app_yaml),
        requirements={**DEPLOY_SDK_REQUIREMENT, **deployapps.read_requirements(path)},
        settings={"app": os.path.abspath(app), "model": deployapps.find_model(path, model),
                  "input_format": input_format or deployapps.input_format(app, app_yaml),
                  "launch": "cold" if cold_because else launch, "cold_because": cold_because},
    )


def _code_package(path: str, mode: str, described: dict, name_key: str, **fields) -> PackageInfo:
    """A package that runs its own code (bundle, Deploy app): named by its own description, else its file name,
    and hashed for the trust list."""
    stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    return PackageInfo(path=os.path.abspath(path), mode=mode, name=str(described.get(name_key) or stem),
                       version=str(described.get("version", "")), description=str(described.get("description", "")),
                       content_hash=trust.content_hash(path), **fields)


def package_facts(package: PackageInfo, trusted: bool) -> list:
    """What a user should know before a run, beyond name and labels, as (heading, text) pairs.

    ``inspect`` prints them and Slicer's panel shows them in its info card.
    """
    facts = []
    settings = package.settings
    if package.mode == "torchscript":
        facts.append(("sidecar", package.sidecar or "none (defaults: whole volume, no resampling, argmax)"))
    if package.mode == "bundle":
        forms = {"folder": "bundle folder", "zip": "bundle zip",
                 "torchscript": "TorchScript file with the bundle's configs embedded (ckpt_export)"}
        facts.append(("form", forms.get(settings.get("form"), settings.get("form", ""))))
        facts.append(("config", f"configs/{settings['inference_config']}" if settings.get("inference_config")
                      else "none: the bundle has no inference config and cannot run"))
        made_with = settings.get("made_with") or {}
        if made_with:
            facts.append(("made with", ", ".join(f"{name} {version}" for name, version in made_with.items())))
        needed_by = settings.get("needed_by") or {}
        if needed_by:
            one = len(needed_by) == 1
            facts.append(("config needs", ", ".join(f"{name} ({', '.join(users)})" for name, users in needed_by.items())
                          + f", which its metadata does not list (MONAI imports {'it' if one else 'them'} only when "
                          f"{'that runs' if one else 'those run'})"))
    if package.mode == "deploy":
        facts.append(("app", settings["app"]))
        facts.append(("model", settings["model"]))
        facts.append(("input", f"{settings['input_format']} files in a folder (-i)"))
        cold = "cold: python app.py -i -o -m in a new process each run"
        facts.append(("launch", "warm: the worker imports the app once and re-runs it" if settings["launch"] == "warm"
                      else f"{cold} ({settings['cold_because']})" if settings.get("cold_because") else cold))
    if settings.get("channels", 1) > 1:
        names = settings.get("channel_names") or []
        facts.append(("input", f"{settings['channels']} channels ({', '.join(names) or 'unnamed'}), in this order: "
                               "a vector volume, or one volume per channel on one grid"))
    if settings.get("outputs_overlap"):
        facts.append(("output", "segments may overlap: each becomes a segment of its own "
                                "(a segmentation or .seg.nrrd; a labelmap would lose the overlap)"))
    if package.content_hash:
        facts.append(("runs code", "yes, trusted" if trusted else
                      "yes: its configs or code are Python; not trusted yet (you are asked, or pass --trust)"))
    return facts


def normalise_name(name: str) -> str:
    """PyPI's rule: case and runs of ``-_.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_requirements(requirements: dict, installed: dict) -> list:
    """The requirements not installed at all, each with the ``pip install`` that fixes it."""
    return [f'{name} is not installed (pip install "{name}{specifier}")'
            for name, specifier in requirements.items() if normalise_name(name) not in installed]


def check_requirements(requirements: dict, installed: dict) -> list:
    """Each requirement the environment misses, as a sentence with the ``pip install`` that fixes it."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    problems = []
    for name, specifier in requirements.items():
        version = installed.get(normalise_name(name))
        fix = f'pip install "{name}{specifier}"'
        if version is None:
            problems.append(f"{name} is not installed (needs {name}{specifier}; {fix})")
            continue
        try:
            satisfied = SpecifierSet(specifier).contains(Version(version), prereleases=True)
        except (InvalidSpecifier, InvalidVersion):
            problems.append(f"cannot compare {name} {version} with {specifier!r}")
            continue
        if not satisfied:
            problems.append(f"{name} {version} is installed; the package needs {name}{specifier} ({fix})")
    return problems

