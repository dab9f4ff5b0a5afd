"""TorchScript packages: a ``torch.jit`` file (``.ts``, ``.zip``, ``.pt``, ``.pth``) with an optional JSON sidecar."""

from __future__ import annotations

import os

from ..errors import PackageError
from . import sidecar
from .bundle import is_bundle_archive
from .info import PackageInfo
from .kind import FRAMEWORKS, OpenOptions, PackageKind, zip_names
from .sidecar import TorchScriptSettings

SUFFIXES = (".zip", ".ts", ".pt", ".pth")
DEFAULT_REQUIREMENTS = {"torch": ">=1.6"}


def is_torchscript_archive(names: list) -> bool:
    """TorchScript's zip layout: pickled data and its code (a ``torch.save`` checkpoint has no ``code/``)."""
    return any(name.endswith("/data.pkl") for name in names) and any("/code/" in name for name in names)


class TorchScriptKind(PackageKind):
    mode = "torchscript"
    settings_type = TorchScriptSettings
    worker_imports = FRAMEWORKS

    def accept(self, location: str) -> bool:
        names = zip_names(location) if os.path.isfile(location) else None
        return names is not None and is_torchscript_archive(names) and not is_bundle_archive(names)

    def open(self, location: str, options: OpenOptions) -> PackageInfo:
        if not os.path.isfile(location):
            raise PackageError(f"a TorchScript package is a single file: {location}")
        sidecar_file = sidecar.sidecar_path_for(location)
        if os.path.isfile(sidecar_file):
            described = sidecar.read_sidecar(sidecar_file)
        else:
            described = sidecar.parse_sidecar({})
            sidecar_file = ""
        stem = os.path.splitext(os.path.basename(location))[0]
        return PackageInfo(
            path=os.path.abspath(location), mode=self.mode, name=described["name"] or stem,
            version=described["version"], description=described["description"], labels=described["labels"],
            colors=described["colors"], requirements=described["requirements"] or dict(DEFAULT_REQUIREMENTS),
            settings=described["settings"], sidecar=sidecar_file,
        )

    def facts(self, package) -> list:
        return [("sidecar", package.sidecar or "none (defaults: whole volume, no resampling, argmax)")]

    def create_backend(self):
        from ..inference.backends.torchscript import TorchScriptBackend

        return TorchScriptBackend()
