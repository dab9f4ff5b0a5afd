"""MonaiDeployer's library: run a packaged MONAI model on a volume, with no Qt and no Slicer needed.

Importing it is light (no numpy): Slicer's module file takes its choices from here at start-up. The names
below that need numpy (``Runner``, ``Volume``...) are imported when first used; torch and MONAI are imported by
the worker process alone.
"""

import importlib

from .errors import Cancelled, InputError, MonaiDeployerError, NotAMapError, OutputError, PackageError, WorkerError

_LAZY = {
    "MODES": ".packages", "PackageInfo": ".packages", "open_package": ".packages",
    "Job": ".transport.job", "Result": ".runs.runner", "Runner": ".runs.runner",
    "Volume": ".imageio.volume", "read_volume": ".imageio.volume", "stack_channels": ".imageio.volume",
    "write_volume": ".imageio.volume",
}

__all__ = [
    "MODES", "Cancelled", "InputError", "Job", "MonaiDeployerError", "NotAMapError", "OutputError", "PackageError",
    "PackageInfo", "Result", "Runner", "Volume", "WorkerError", "open_package", "read_volume", "stack_channels",
    "write_volume",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
