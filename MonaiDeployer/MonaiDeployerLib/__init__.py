"""MonaiDeployer's library: run a packaged MONAI model on a volume, with no Qt and no Slicer needed.

Only light modules are imported here; torch and MONAI are imported by the worker process alone.
"""

from .errors import Cancelled, InputError, MonaiDeployerError, NotAMapError, OutputError, PackageError, WorkerError
from .imageio.volume import Volume, read_volume, stack_channels, write_volume
from .packages.info import MODES, PackageInfo, open_package
from .runs.runner import Job, Result, Runner

__all__ = [
    "MODES", "Cancelled", "InputError", "Job", "MonaiDeployerError", "NotAMapError", "OutputError", "PackageError",
    "PackageInfo", "Result", "Runner", "Volume", "WorkerError", "open_package", "read_volume", "stack_channels",
    "write_volume",
]
