"""MONAI Bundle packages: a bundle folder, a zip of one, or a TorchScript file with the configs embedded
(``ckpt_export``). What is read from their files is in ``bundle_files``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from . import bundle_files
from .info import PackageInfo
from .kind import FRAMEWORKS, OpenOptions, PackageKind, Settings, code_package_fields, zip_names

FORMS = {"folder": "bundle folder", "zip": "bundle zip",
         "torchscript": "TorchScript file with the bundle's configs embedded (ckpt_export)"}


@dataclass(frozen=True)
class BundleSettings(Settings):
    """What running a bundle needs from its metadata and configs (nothing in them evaluated)."""

    form: str = "folder"  # "folder", "zip" or "torchscript" (configs embedded by ckpt_export)
    inference_config: str = ""  # the config under configs/ ("": none, the bundle cannot run)
    outputs_overlap: bool = False
    made_with: dict = field(default_factory=dict)  # {"monai": "1.3.0", ...} as its metadata records them
    channels: int = 1
    channel_names: list = field(default_factory=list)
    needed_by: dict = field(default_factory=dict)  # {pip name: [transforms]} its config needs, its metadata omits
    licence: str = ""  # the licences it states (bundle_files.bundle_licence)


def is_bundle_archive(names: list) -> bool:
    """A bundle zip (``configs/``) or a TorchScript file with a bundle's configs embedded (``extra/metadata.json``)."""
    return any("configs/" in name or name.endswith("/extra/metadata.json") for name in names)


class BundleKind(PackageKind):
    mode = "bundle"
    settings_type = BundleSettings
    worker_imports = FRAMEWORKS

    def accept(self, location: str) -> bool:
        if os.path.isdir(location):
            return os.path.isdir(os.path.join(location, "configs"))
        names = zip_names(location) if os.path.isfile(location) else None
        return names is not None and is_bundle_archive(names)

    def open(self, location: str, options: OpenOptions) -> PackageInfo:
        """Requirements: the metadata's, and any package the config's transforms need that it does not list (no
        version: MONAI asks for none that matters), named in ``settings.needed_by`` with the transforms."""
        metadata, inference, form = bundle_files.read_bundle_metadata(location)
        requirements = bundle_files.bundle_requirements(metadata)
        needed_by = bundle_files.undeclared_needs(location, inference, requirements)
        requirements.update(dict.fromkeys(needed_by, ""))
        settings = BundleSettings(form=form, inference_config=inference,
                                  outputs_overlap=bundle_files.outputs_overlap(metadata),
                                  made_with=bundle_files.made_with(metadata), needed_by=needed_by,
                                  licence=bundle_files.bundle_licence(location, metadata),
                                  **bundle_files.bundle_inputs(metadata))
        return PackageInfo(mode=self.mode, labels=bundle_files.bundle_labels(metadata), requirements=requirements,
                           settings=settings, **code_package_fields(location, metadata, "name"))

    def facts(self, package) -> list:
        settings = package.settings
        facts = [("form", FORMS.get(settings.form, settings.form)),
                 ("config", f"configs/{settings.inference_config}" if settings.inference_config
                  else "none: the bundle has no inference config and cannot run")]
        if settings.licence:
            facts.append(("licence", settings.licence))
        if settings.made_with:
            facts.append(("made with", ", ".join(f"{name} {version}" for name, version in settings.made_with.items())))
        if settings.needed_by:
            one = len(settings.needed_by) == 1
            facts.append(("config needs", ", ".join(f"{name} ({', '.join(users)})"
                                                    for name, users in settings.needed_by.items())
                          + f", which its metadata does not list (MONAI imports {'it' if one else 'them'} only when "
                          f"{'that runs' if one else 'those run'})"))
        return facts

    def environment_requirements(self, package) -> dict:
        """The MONAI the bundle was made with (``monai_version``) exactly, and the torch and numpy of the same major
        version as its author's (MONAI 1.3 calls ``ndarray.ptp``, which numpy 2 removed, yet does not ask for
        numpy < 2); its other packages as minimums, and those its inference config's transforms need that its
        metadata does not list (scikit-image for KeepLargestConnectedComponentd), without a version."""
        requirements = dict(package.requirements)
        for name, version in package.settings.made_with.items():
            major = re.match(r"\d+", version)
            if name == "monai":
                requirements[name] = f"=={version}"
            elif major:
                requirements[name] = f">={version},<{int(major.group()) + 1}"
        return requirements

    def create_backend(self):
        from ..inference.backends.bundle import BundleBackend

        return BundleBackend()
