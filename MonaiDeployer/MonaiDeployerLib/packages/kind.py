"""What every kind of model package answers: ``PackageKind``, its typed ``Settings``, and the user's ``OpenOptions``.

A kind is one object (``packages.registry.KINDS``): how to recognise it on disk (``accept``), how to open and
describe it, what the worker needs for it, the environment made for it, its backend, and what a cancelled run
of it leaves behind. Nothing outside the kinds' own modules asks which kind a package is by name.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from dataclasses import dataclass

from ..errors import PackageError
from . import trust

LAUNCHES = ("warm", "cold")
INPUT_FORMATS = ("nifti", "dicom")
FRAMEWORKS = ("torch", "monai")  # what the worker imports for a kind whose model runs in the worker


@dataclass(frozen=True)
class Settings:
    """A kind's settings: typed, checked when the package is opened, sent to the worker as ``to_dict()``.

    Every kind answers ``channels`` (input channels the model takes; None when it does not say),
    ``channel_names``, ``outputs_overlap`` (one mask per label, not one label per voxel) and ``licence`` (the
    licences the package states, as one line; "": none).
    """

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, document: dict):
        """The settings ``to_dict`` wrote; keys it does not know are an error. A section that is itself ``Settings``
        (a TorchScript sidecar's ``input``...) is known by its default."""
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = set(document) - set(fields)
        if unknown:
            raise PackageError(f"unknown {cls.__name__} settings: {', '.join(sorted(unknown))}")
        values = {}
        for name, value in document.items():
            default = fields[name].default
            values[name] = type(default).from_dict(value) if isinstance(default, Settings) else value
        return cls(**values)

    channels = None  # plain class attributes, not fields: a kind's settings may make them fields or properties
    channel_names = ()
    outputs_overlap = False
    licence = ""


@dataclass(frozen=True)
class OpenOptions:
    """How the user asks a package to run, beyond its path; each kind takes the options that apply to it.

    ``model``: a Deploy app's ``-m`` model; ``launch``: "warm" or "cold" (Deploy apps and MAPs); ``input_format``:
    "nifti" or "dicom" (None: what the package says); ``runtime``: "docker" or "podman" for a MAP (None: the first
    that answers); ``entry_point``: run an image that is not a MAP through its own entry point.
    """

    model: str | None = None
    launch: str = "warm"
    input_format: str | None = None
    runtime: str | None = None
    entry_point: bool = False

    def __post_init__(self):
        if self.launch not in LAUNCHES:
            raise PackageError(f"unknown launch {self.launch!r} (use {' or '.join(LAUNCHES)})")
        if self.input_format not in (None, *INPUT_FORMATS):
            raise PackageError(f"unknown input format {self.input_format!r} (use {' or '.join(INPUT_FORMATS)})")


class PackageKind:
    """One kind of model package. Subclasses set the class attributes and answer ``accept`` and ``open``."""

    mode: str = ""  # its name in the API, on the command line (--mode) and in the panel
    settings_type: type[Settings] = Settings
    worker_imports: tuple = ()  # what the worker imports before its first run of this kind
    on_disk: bool = True  # a file or folder (False: an image reference)
    own_environment: bool = False  # runs in an image of its own: no requirements on the worker, no made environment

    def accept(self, location: str) -> bool:
        """True when ``location`` (a path, or an image reference) is a package of this kind."""
        raise NotImplementedError

    def open(self, location: str, options: OpenOptions):
        """The ``PackageInfo`` of the package at ``location``; raises PackageError when it cannot be used."""
        raise NotImplementedError

    def facts(self, package) -> list:
        """(heading, text) pairs a user should know before running it, this kind's own (``inspect``, the card)."""
        return []

    def environment_requirements(self, package) -> dict:
        """{name: specifier} that an environment made for the package installs."""
        return dict(package.requirements)

    def create_backend(self):
        """The worker's backend for this kind (imported only in the worker)."""
        raise NotImplementedError

    def inspect(self, package):
        """What can be read before a run beyond the package's files (a MAP's image), or None; may raise."""
        return None

    def container_runtime(self, package) -> str | None:
        """The container runtime its runs start containers with, or None."""
        return None

    def clean_up_cancelled(self, package, private_folder: str) -> None:
        """Remove what a cancelled run leaves that killing the worker does not (a MAP's containers)."""

    def __repr__(self) -> str:
        return f"<{self.mode} package kind>"


def zip_names(path: str) -> list | None:
    """The entries of a zip file (TorchScript files and bundle zips are zips), or None when it is not one."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def code_package_fields(path: str, described: dict, name_key: str) -> dict:
    """The fields of a package that runs its own code (a bundle, a Deploy app): named by its own description (else
    its file or folder name without suffix), and hashed for the trust list."""
    stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    return {"path": os.path.abspath(path), "name": str(described.get(name_key) or stem),
            "version": str(described.get("version", "")), "description": str(described.get("description", "")),
            "content_hash": trust.content_hash(path)}
