"""MONAI Application Packages (MAPs): a container image, named by its reference, run in docker or podman.
What is read from the image before a run is in ``map_image``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..environment.containers import check_runtime_choice, find_runtime, remove_containers_of
from ..errors import PackageError
from .info import PackageInfo
from .kind import OpenOptions, PackageKind, Settings

IMAGE_REFERENCE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
FILE_SUFFIXES = (".zip", ".ts", ".pt", ".pth", ".py", ".json")  # a missing file's name, not an image's


@dataclass(frozen=True)
class MapSettings(Settings):
    """How the image runs: warm (one kept container) or cold (a container per run), on which runtime."""

    runtime: str | None = None  # "docker" or "podman"; None: the first that answers
    launch: str = "warm"
    input_format: str | None = None  # None: what its manifest says
    entry_point: bool = False  # an image without MAP manifests, run through its own entry point (cold)

    def __post_init__(self):
        check_runtime_choice(self.runtime)


class MapKind(PackageKind):
    mode = "map"
    settings_type = MapSettings
    on_disk = False
    own_environment = True

    def accept(self, location: str) -> bool:
        return (not os.path.exists(location) and IMAGE_REFERENCE.match(location) is not None
                and not location.endswith(FILE_SUFFIXES))

    def open(self, location: str, options: OpenOptions) -> PackageInfo:
        """Nothing is read from the image here (``inspect`` does, before a run)."""
        settings = MapSettings(runtime=options.runtime, launch="cold" if options.entry_point else options.launch,
                               input_format=options.input_format, entry_point=options.entry_point)
        return PackageInfo(path=location, mode=self.mode, name=location, settings=settings)

    def inspect(self, package):
        """The image's ``MapFacts``; raises NotAMapError for an image without MAP manifests (unless entry point)."""
        from .map_image import inspect_package

        return inspect_package(package)

    def environment_requirements(self, package) -> dict:
        raise PackageError(f"{package.name} is a MAP: it runs in its own image and needs no made environment")

    def container_runtime(self, package) -> str | None:
        return find_runtime(package.settings.runtime)

    def clean_up_cancelled(self, package, private_folder: str) -> None:
        """Killing the worker does not stop the containers it started: they are removed by name."""
        remove_containers_of(self.container_runtime(package), private_folder)

    def create_backend(self):
        from ..inference.backends.map import MapBackend

        return MapBackend()
