"""A model package on disk or in an image registry: the kinds (one module each), what a package says about
itself, and whether the user trusts it. Nothing here imports numpy, torch or MONAI."""

from .info import PackageInfo
from .kind import OpenOptions, PackageKind, Settings
from .registry import KINDS, MODES, detect_mode, kind_named, open_package, package_facts

__all__ = ["KINDS", "MODES", "OpenOptions", "PackageInfo", "PackageKind", "Settings", "detect_mode", "kind_named",
           "open_package", "package_facts"]
