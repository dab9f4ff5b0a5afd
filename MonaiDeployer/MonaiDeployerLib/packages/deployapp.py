"""MONAI Deploy App SDK applications: a ``.py`` file, or a folder with ``app.py`` or ``__main__.py``, and its model.
What is read from their files is in ``deployapp_files``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import deployapp_files
from .info import PackageInfo
from .kind import OpenOptions, PackageKind, Settings, code_package_fields

SDK_REQUIREMENT = {"monai-deploy-app-sdk": ">=0.6"}  # Holoscan-based releases
COLD = "cold: python app.py -i -o -m in a new process each run"


@dataclass(frozen=True)
class DeploySettings(Settings):
    """How the app runs: ``python APP -i INPUT -o OUTPUT -m MODEL``, warm (imported once and re-run) or cold."""

    app: str  # the file that runs
    model: str  # what it gets with -m
    input_format: str = "nifti"  # what it reads from -i: "nifti" or "dicom"
    launch: str = "warm"
    cold_because: str | None = None  # why it runs cold though warm was asked for


class DeployKind(PackageKind):
    mode = "deploy"
    settings_type = DeploySettings

    def accept(self, location: str) -> bool:
        if os.path.isdir(location):
            return not os.path.isdir(os.path.join(location, "configs")) and any(
                os.path.isfile(os.path.join(location, name)) for name in deployapp_files.APP_FILES)
        return os.path.isfile(location) and location.endswith(".py")

    def open(self, location: str, options: OpenOptions) -> PackageInfo:
        """Cold when asked, or when the app cannot be kept warm (``warm_obstacle``: a plain script, read with
        ``ast``, never imported); ``options.input_format`` overrides what its ``app.yaml`` or code says."""
        app = deployapp_files.app_file(location)
        app_yaml = deployapp_files.read_app_yaml(location)
        application = app_yaml.get("application") if isinstance(app_yaml.get("application"), dict) else {}
        cold_because = deployapp_files.warm_obstacle(app) if options.launch == "warm" else None
        settings = DeploySettings(
            app=os.path.abspath(app), model=deployapp_files.find_model(location, options.model),
            input_format=options.input_format or deployapp_files.input_format(app, app_yaml),
            launch="cold" if cold_because else options.launch, cold_because=cold_because)
        return PackageInfo(mode=self.mode, labels=deployapp_files.declared_labels(app_yaml),
                           requirements={**SDK_REQUIREMENT, **deployapp_files.read_requirements(location)},
                           settings=settings, **code_package_fields(location, application, "title"))

    def facts(self, package) -> list:
        settings = package.settings
        warm = settings.launch == "warm"
        return [("app", settings.app), ("model", settings.model),
                ("input", f"{settings.input_format} files in a folder (-i)"),
                ("launch", "warm: the worker imports the app once and re-runs it" if warm
                 else f"{COLD} ({settings.cold_because})" if settings.cold_because else COLD)]

    def create_backend(self):
        from ..inference.backends.deploy import DeployBackend

        return DeployBackend()
