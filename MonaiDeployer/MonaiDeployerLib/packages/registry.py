"""The kinds of model package, and opening a package as one of them.

To add a kind: a module with a ``PackageKind`` subclass and its ``Settings`` (see ``kind.py``), listed in ``KINDS``
below; its backend in ``inference/backends/``. The command line's ``--mode``, the panel's choices and the worker
follow this list.
"""

from __future__ import annotations

import logging
import os

from ..errors import PackageError
from .bundle import BundleKind
from .deployapp import DeployKind
from .info import PackageInfo
from .kind import OpenOptions, PackageKind
from .map import MapKind
from .torchscript import TorchScriptKind

logger = logging.getLogger(__name__)
KINDS: tuple[PackageKind, ...] = (TorchScriptKind(), BundleKind(), DeployKind(), MapKind())
MODES = tuple(kind.mode for kind in KINDS)


def kind_named(mode: str) -> PackageKind:
    for kind in KINDS:
        if kind.mode == mode:
            return kind
    raise PackageError(f"unknown mode {mode!r} (use auto, {', '.join(MODES)})")


def recognise(location: str) -> PackageKind:
    """The kind that accepts ``location``; a PackageError that says what it is instead when none does."""
    for kind in KINDS:
        if kind.accept(location):
            return kind
    raise PackageError(_not_a_package(location))


def detect_mode(location: str) -> str:
    """Tell a package's kind from what is on disk (or that it names a container image)."""
    return recognise(os.fspath(location)).mode


def open_package(path_or_reference, mode: str | None = None, model: str | None = None, launch: str = "warm",
                 input_format: str | None = None, runtime: str | None = None, entry_point: bool = False,
                 zoo_index: str | None = None) -> PackageInfo:
    """Describe a model package; ``mode`` overrides detection ("torchscript", "bundle", "deploy", "map").
    ``zoo:NAME[@VERSION]`` names a Model Zoo bundle, downloaded into the cache on first use, as the index
    ``zoo_index`` lists it (default: ``$MONAIDEPLOYER_ZOO_INDEX``, else the Model Zoo's).

    For a MONAI Deploy app, ``model`` names the model it gets with ``-m`` when the package holds none
    (or another one), and ``launch`` is "warm" (the worker re-runs the imported app) or "cold"
    (``python app.py -i -o -m`` in a new process each run, for apps that do not survive re-runs);
    ``input_format`` ("nifti" or "dicom") overrides what the app's ``app.yaml`` or code says it reads.
    For a MAP, ``runtime`` ("docker" or "podman") picks the container runtime (default: the first that answers),
    ``launch`` is "warm" (one container kept running) or "cold" (a container per run), and ``input_format``
    overrides what its manifest says it reads; ``entry_point`` runs an image that is not a MAP (no manifests)
    through its own entry point, cold.
    """
    options = OpenOptions(model=model, launch=launch, input_format=input_format, runtime=runtime,
                          entry_point=entry_point)
    chosen = None if mode in (None, "auto") else kind_named(mode)
    location = os.fspath(path_or_reference)
    if location.startswith("zoo:"):  # a Model Zoo bundle, downloaded on first use
        from ..zoo.reference import resolve

        location = resolve(location, zoo_index)
    detected = recognise(location)
    kind = chosen or detected
    if kind.on_disk != detected.on_disk:
        raise PackageError(f"{location} is a {detected.mode} package, it cannot run in {kind.mode} mode")
    package = kind.open(location, options)
    logger.debug("Opened %s as a %s package: %s %s", location, kind.mode, package.name, package.version)
    return package


def package_facts(package: PackageInfo, trusted: bool) -> list:
    """What a user should know before a run, beyond name and labels, as (heading, text) pairs: the kind's own,
    then its input channels, overlapping outputs and whether it runs code. ``inspect`` prints them and Slicer's
    panel shows them in its info card."""
    settings = package.settings
    facts = package.kind.facts(package)
    if (settings.channels or 1) > 1:
        names = settings.channel_names
        facts.append(("input", f"{settings.channels} channels ({', '.join(names) or 'unnamed'}), in this order: "
                               "a vector volume, or one volume per channel on one grid"))
    if settings.outputs_overlap:
        facts.append(("output", "segments may overlap: each becomes a segment of its own "
                                "(a segmentation or .seg.nrrd; a labelmap would lose the overlap)"))
    if package.content_hash:
        facts.append(("runs code", "yes, trusted" if trusted else
                      "yes: its configs or code are Python; not trusted yet (you are asked, or pass --trust)"))
    return facts


def _not_a_package(location: str) -> str:
    """Why no kind accepts ``location``: the near miss it is (a checkpoint, a damaged zip...), or that it is missing."""
    if os.path.isdir(location):
        return (f"{location} is not a model package: no configs/ folder (MONAI Bundle) "
                "and no app.py or __main__.py (MONAI Deploy app)")
    if os.path.isfile(location):
        return _not_a_model_file(location)
    return f"model package not found: {location}"


def _not_a_model_file(path: str) -> str:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        if _starts_with_zip_signature(path):
            return f"{path} is a corrupt zip file (truncated or damaged)"
        return (f"{path} is not a model file: expected a TorchScript file (a zip archive), "
                "a MONAI Bundle or a MONAI Deploy app")
    except OSError as error:
        return f"cannot read {path}: {error.strerror}"
    if any(name.endswith("/data.pkl") for name in names):
        return (f"{path} is a PyTorch checkpoint (torch.save), not TorchScript: "
                "export the model with torch.jit.script(model).save(path)")
    return f"{path} is a zip file but not a TorchScript model or a MONAI Bundle"


def _starts_with_zip_signature(path: str) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.read(4) == b"PK\x03\x04"
    except OSError:
        return False
