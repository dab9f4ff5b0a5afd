"""Packages MONAI imports only when something uses them, named as ``pip install`` takes them.

MONAI imports scikit-image, scipy, nibabel, einops... lazily (``monai.utils.optional_import``): a
bundle whose metadata does not list one fails only when the transform that needs it runs, with
MONAI's message naming the module (``skimage.measure``), not the package to install
(``scikit-image``). Two tables here: the pip distribution of each import name, and which MONAI
transforms and networks need which import, so that a bundle's config shows what it needs before
a run (``config_needs``) and a failed run names what to install (``install_hint``).

Nothing here imports MONAI: the panel and ``inspect`` use it on a package's files alone.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from typing import Final

# Import name (top-level module) -> pip distribution, where a user could not guess one from the other or where
# MONAI imports the module optionally. A module not listed is named as its own pip package, with a caveat.
DISTRIBUTIONS: Final[dict[str, str]] = {
    "skimage": "scikit-image",
    # OpenCV's headless build: the same cv2 module without Qt/GUI support, so it needs no libGL or X11 libraries,
    # which servers and containers lack (opencv-python fails to import there). MONAI's video readers need no GUI.
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "yaml": "PyYAML",
    "ignite": "pytorch-ignite",
    "nrrd": "pynrrd",
    "pywt": "PyWavelets",
    "bs4": "beautifulsoup4",
    "openslide": "openslide-python",
    "huggingface_hub": "huggingface-hub",
    "itk": "itk",
    "nibabel": "nibabel",
    "scipy": "scipy",
    "pandas": "pandas",
    "einops": "einops",
    "tensorboard": "tensorboard",
    "tensorboardX": "tensorboardX",
    "torchvision": "torchvision",
    "torchio": "torchio",
    "tqdm": "tqdm",
    "h5py": "h5py",
    "zarr": "zarr",
    "tifffile": "tifffile",
    "pydicom": "pydicom",
    "SimpleITK": "SimpleITK",
    # Not listed: cucim and cupy, GPU speed-ups MONAI falls back from (to scikit-image and scipy) when absent; their
    # pip names depend on the CUDA release (cupy-cuda12x, cucim-cu12).
}

# MONAI transforms and networks (class names, a dictionary transform's d/D/Dict suffix left off) -> the module
# they import when they run, each read in MONAI's source (releases 1.4 and 1.6): monai/transforms/utils.py,
# post/array.py, spatial/array.py, intensity/array.py, utility/array.py, networks/nets and networks/blocks.
TRANSFORM_NEEDS: Final[dict[str, str]] = {
    # get_largest_connected_component_mask: skimage.measure.label on the CPU (cuCIM only on a GPU, with CuPy)
    "KeepLargestConnectedComponent": "skimage.measure",
    "RemoveSmallObjects": "skimage.morphology",  # remove_small_objects
    "FillHoles": "scipy.ndimage",  # fill_holes: generate_binary_structure, binary_dilation
    "DistanceTransformEDT": "scipy.ndimage",  # distance_transform_edt on the CPU (cuCIM on a GPU)
    "ComputeHoVerMaps": "skimage.measure",  # regionprops
    "Orientation": "nibabel",  # nib.io_orientation, nib.orientations
    "TorchVision": "torchvision.transforms",
    "RandTorchVision": "torchvision.transforms",
    "TorchIO": "torchio.transforms",
    "RandTorchIO": "torchio.transforms",
    "SwinUNETR": "einops",  # rearrange in its transformer's output projection
    "ViT": "einops.layers.torch",  # SABlock's Rearrange, in every TransformerBlock
    "ViTAutoEnc": "einops.layers.torch",
    "UNETR": "einops.layers.torch",  # a ViT inside
}
DICTIONARY_SUFFIXES: Final = ("Dict", "d", "D")
# The parts of an inference config the bundle backend builds; what they refer to (``@id``) is followed.
BUILT_PARTS: Final = ("preprocessing", "postprocessing", "inferer", "network_def")
REFERENCE = re.compile(r"@([A-Za-z_][\w#]*)")
IMPORT_STATEMENT = re.compile(r"^\$\s*(?:import|from)\s+([A-Za-z_][\w.]*)")


@dataclass(frozen=True)
class MissingPackage:
    """A module an error says is not there (or too old), and the pip distribution that provides it."""

    module: str
    distribution: str
    known: bool  # the distribution comes from the table, not guessed from the module's name
    too_old: bool = False  # the module imports, but not in the version MONAI asks for


def pip_name(module: str) -> str:
    """The pip distribution of an import name ("skimage.measure" -> "scikit-image"); unknown ones as they are."""
    top = module.split(".")[0]
    return DISTRIBUTIONS.get(top) or _known_case_insensitive(top) or top


def _known_case_insensitive(top: str) -> str:
    """MONAI's own messages capitalise ("Skimage.measure required.")."""
    return next((name for module, name in DISTRIBUTIONS.items() if module.lower() == top.lower()), "")


# How MONAI and Python say a module is missing, each with the kind of error that says it.
_MONAI_OPTIONAL_IMPORT = re.compile(r"^(?:import|from) ([A-Za-z_][\w.]*)")  # optional_import: "import skimage.x (..."
_NO_MODULE = re.compile(r"No module named '([A-Za-z_][\w.]*)'")  # Python's, inside optional_import's message
_MONAI_REQUIRE_PKG = re.compile(r"required package `([A-Za-z_][\w.]*)` is not installed")  # monai.utils.require_pkg
_MONAI_TRANSFORM = re.compile(r"^([A-Za-z_][\w.]*) required\b")  # "Skimage.measure required." (transforms' utils)


def missing_package(error: BaseException) -> MissingPackage | None:
    """The package a failed import behind ``error`` (or an error it wraps) needs, if that is why it failed.

    Reads MONAI's ``OptionalImportError`` (from ``optional_import`` and ``require_pkg``), its transforms' own
    "skimage.measure required." and Python's ``ModuleNotFoundError``.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found = _missing_in(error)
        if found is not None:
            return found
        error = error.__cause__ or error.__context__
    return None


def _missing_in(error: BaseException) -> MissingPackage | None:
    text = str(error).strip()
    if type(error).__name__ == "OptionalImportError":
        required = _MONAI_REQUIRE_PKG.search(text)
        if required:  # "not installed or the version doesn't match": which one, this Python can tell
            return _package_for(required.group(1), too_old=_importable(required.group(1)))
        imported, absent = _MONAI_OPTIONAL_IMPORT.match(text), _NO_MODULE.search(text)
        if imported and absent:  # the module MONAI imports, unless what is absent is another package it imports
            same = absent.group(1).split(".")[0] == imported.group(1).split(".")[0]
            return _package_for(imported.group(1) if same else absent.group(1), too_old=False)
        if imported and "(requires '" in text:  # a pure version mismatch
            return _package_for(imported.group(1), too_old=True)
    if isinstance(error, ModuleNotFoundError) and error.name and _distribution_known(error.name):
        return _package_for(error.name, too_old=False)  # a config's own import; a bundle's scripts are not packages
    if isinstance(error, RuntimeError):
        transform = _MONAI_TRANSFORM.match(text)
        if transform and _distribution_known(transform.group(1)):
            return _package_for(transform.group(1), too_old=False)
    return None


def _distribution_known(module: str) -> bool:
    return bool(_known_case_insensitive(module.split(".")[0]))


def _package_for(module: str, too_old: bool) -> MissingPackage:
    if _distribution_known(module) and module.split(".")[0] not in DISTRIBUTIONS:
        module = module[0].lower() + module[1:]  # MONAI's "Skimage.measure required."
    return MissingPackage(module, pip_name(module), _distribution_known(module), too_old)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def install_hint(error: BaseException) -> str:
    """What to install, as the end of a one-line error, when ``error`` is a missing package; else ""."""
    missing = missing_package(error)
    if missing is None:
        return ""
    name, python = missing.distribution, sys.executable
    if missing.too_old:
        return (f"it needs a newer {name} (import {missing.module}) than the worker Python {python} has: "
                f"pip install --upgrade {name}")
    if not missing.known:
        return (f"it needs the module {missing.module}, which the worker Python {python} lacks: pip install {name} "
                "(if that is the name of its pip package)")
    return f"it needs {name} (import {missing.module}), which the worker Python {python} lacks: pip install {name}"


def config_needs(config: dict) -> dict[str, list[str]]:
    """The pip packages the parts of an inference config a run builds need, each with what needs it.

    From the ``_target_`` of MONAI transforms and networks in ``TRANSFORM_NEEDS`` and from the config's
    ``$import`` statements of modules in ``DISTRIBUTIONS``; nothing is evaluated.
    """
    needs: dict[str, list[str]] = {}

    def need(module: str, by: str) -> None:
        users = needs.setdefault(pip_name(module), [])
        if by not in users:
            users.append(by)

    for value in _strings_in(config.get("imports", [])):
        match = IMPORT_STATEMENT.match(value)
        if match and match.group(1).split(".")[0] in DISTRIBUTIONS:
            need(match.group(1), value.lstrip("$ "))
    for target in _targets_in(config):
        module = TRANSFORM_NEEDS.get(_monai_class(target))
        if module:
            need(module, target.split(".")[-1])
    return {name: sorted(users) for name, users in sorted(needs.items())}


def _monai_class(target: str) -> str:
    """The table's name for a ``_target_`` of MONAI ("monai.transforms.FillHolesd" -> "FillHoles"); else ""."""
    if "." in target and not target.startswith("monai."):
        return ""  # the bundle's own scripts or another library
    name = target.split(".")[-1]
    if name in TRANSFORM_NEEDS:
        return name
    return next((name[:-len(suffix)] for suffix in DICTIONARY_SUFFIXES
                 if name.endswith(suffix) and name[:-len(suffix)] in TRANSFORM_NEEDS), "")


def _targets_in(config: dict) -> list[str]:
    """The ``_target_`` strings of the built parts of a config and of every config item they refer to."""
    targets, visited = [], set()
    pending = [part for part in BUILT_PARTS if part in config]
    while pending:
        reference = pending.pop()
        if reference in visited:
            continue
        visited.add(reference)
        item = _item(config, reference)
        for entry in _mappings_in(item):
            if isinstance(entry.get("_target_"), str):
                targets.append(entry["_target_"])
        pending.extend(match.group(1) for value in _strings_in(item) for match in REFERENCE.finditer(value))
    return targets


def _item(config: dict, reference: str):
    """The config item ``reference`` ("postprocessing#transforms#0") names, or None."""
    item = config
    for key in reference.split("#"):
        if isinstance(item, dict) and key in item:
            item = item[key]
        elif isinstance(item, list) and key.isdigit() and int(key) < len(item):
            item = item[int(key)]
        else:
            return None
    return item


def _mappings_in(item):
    if isinstance(item, dict):
        yield item
    for child in item.values() if isinstance(item, dict) else item if isinstance(item, list) else ():
        yield from _mappings_in(child)


def _strings_in(item):
    if isinstance(item, str):
        yield item
    for child in item.values() if isinstance(item, dict) else item if isinstance(item, list) else ():
        yield from _strings_in(child)
