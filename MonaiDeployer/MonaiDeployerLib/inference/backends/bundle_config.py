"""A bundle's inference config made runnable on one volume in memory, on the user's device.

The config is parsed by MONAI's own ``ConfigParser`` and its ``preprocessing``, ``inferer`` and
``postprocessing`` are instantiated as the author wrote them, with these changes:

- ``LoadImaged`` becomes a transform that takes the volume already in memory (same keys, same
  metadata; its ``reader`` is never needed), and ``SaveImaged`` is left out: nothing is read or
  written on disk;
- every CUDA device the config names becomes the user's device: ``device`` itself, plain
  ``"cuda"`` strings under ``device``/``map_location`` keys, and ``torch.device(...)`` inside ``$``
  expressions (which see a ``torch`` whose ``device`` and ``load`` know the user's choice);
- the bundle root is the folder the bundle was found in, and is on ``sys.path`` for ``scripts/``.
"""

from __future__ import annotations

import os
import sys
import types

from ...environment.optional_packages import install_hint
from ...errors import PackageError
from . import one_line_cause

DEVICE_KEYS = ("device", "map_location")
LOADER_NAMES = ("LoadImaged", "LoadImageD", "LoadImageDict")


def parse_inference_config(root: str, config_name: str, device):
    """MONAI's ``ConfigParser`` over ``configs/<config_name>`` with the bundle root and device set."""
    from monai.bundle import ConfigParser

    path = os.path.join(root, "configs", config_name)
    parser = ConfigParser()
    try:
        parser.read_config(path)
    except Exception as error:  # json and yaml raise their own types for a file that is not valid
        raise PackageError(f"configs/{config_name} is not valid {_format_of(config_name)}: "
                           f"{one_line_cause(error)}") from error
    if not isinstance(parser.config, dict):
        raise PackageError(f"configs/{config_name} must hold a mapping of config ids")
    for entry in _mappings_in(parser.config):
        _send_cuda_strings_to(entry, str(device))
        _drop_loader_reader(entry)
    parser["bundle_root"] = root
    parser["device"] = device
    parser.globals = DeviceGlobals(parser.globals, device)
    use_scripts_of(root)
    return parser


def _format_of(config_name: str) -> str:
    return "JSON" if config_name.endswith(".json") else "YAML"


class TorchOnDevice(types.ModuleType):
    """``torch`` as a bundle's expressions see it: CUDA devices are the user's device; numpy arrays load."""

    def __init__(self, device):
        import torch

        super().__init__("torch")
        self._torch = torch
        self._device = torch.device(device)

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def device(self, *arguments, **keywords):
        requested = self._torch.device(*arguments, **keywords)
        return self._device if requested.type == "cuda" else requested

    def load(self, *arguments, **keywords):
        """``torch.load`` onto the user's device, numpy arrays allowed (as in the torch most bundles were made for)."""
        if "map_location" in keywords:
            keywords["map_location"] = _on_device(keywords["map_location"], self._device)
        elif len(arguments) > 1:
            arguments = (arguments[0], _on_device(arguments[1], self._device), *arguments[2:])
        with self._torch.serialization.safe_globals(_numpy_array_globals()):
            return self._torch.load(*arguments, **keywords)


def _numpy_array_globals() -> list:
    """What unpickling a plain numeric numpy array needs, and nothing that can run code."""
    import numpy

    core = getattr(numpy, "_core", None) or numpy.core
    dtypes = [type(numpy.dtype(name)) for name in ("bool", "uint8", "int8", "int16", "int32", "int64",
                                                   "float16", "float32", "float64")]
    return [core.multiarray._reconstruct, numpy.ndarray, numpy.dtype, *dtypes]


def _on_device(location, device):
    text = str(location)
    return device if text.startswith("cuda") else location


class DeviceGlobals(dict):
    """The parser's expression globals; an ``$import torch`` in the config still gets ``TorchOnDevice``."""

    def __init__(self, original: dict, device):
        super().__init__(original)
        self._torch = TorchOnDevice(device)
        super().__setitem__("torch", self._torch)

    def __setitem__(self, key, value):
        if key == "torch" and getattr(value, "__name__", "") == "torch":
            value = self._torch
        super().__setitem__(key, value)


def _mappings_in(config):
    """Every mapping in a parsed config, nested ones included."""
    if isinstance(config, dict):
        yield config
    children = config.values() if isinstance(config, dict) else config if isinstance(config, list) else ()
    for child in children:
        yield from _mappings_in(child)


def _send_cuda_strings_to(entry: dict, device: str) -> None:
    """Plain ``"cuda..."`` values under ``device`` or ``map_location`` keys become ``device``."""
    for key in DEVICE_KEYS:
        if isinstance(entry.get(key), str) and entry[key].startswith("cuda"):
            entry[key] = device


def _drop_loader_reader(entry: dict) -> None:
    """A ``LoadImaged`` here never reads a file, so it needs no reader (``ITKReader`` would need itk installed)."""
    if str(entry.get("_target_", "")).split(".")[-1] in LOADER_NAMES:
        entry.pop("reader", None)


def use_scripts_of(root: str) -> None:
    """Put the bundle root first on ``sys.path`` and forget another bundle's ``scripts`` package."""
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    for name, module in list(sys.modules.items()):
        if name == "scripts" or name.startswith("scripts."):
            location = getattr(module, "__file__", None) or ""
            if not os.path.abspath(location).startswith(os.path.abspath(root) + os.sep):
                del sys.modules[name]


def instantiate(parser, config_id: str, what: str, made_with: dict):
    """``parser.get_parsed_content(config_id)``, failing with one line that says which part broke and, when the
    bundle was made with another MONAI release than the worker's, that this may be why (or, when it needs a
    package the worker lacks, the ``pip install`` for it)."""
    if config_id not in parser:
        raise PackageError(f"the inference config has no {config_id!r} ({what})")
    try:
        return parser.get_parsed_content(config_id, instantiate=True)
    except PackageError:
        raise
    except Exception as error:  # anything a config's Python can raise
        cause = install_hint(error) or f"{one_line_cause(error)}{release_hint(made_with)}"
        raise PackageError(f"the bundle's {config_id!r} cannot be built: {cause}") from error


def release_hint(made_with: dict) -> str:
    """A hint when the worker's MONAI differs in major.minor from the one the bundle was made with."""
    import monai

    wanted = made_with.get("monai", "")
    if not wanted or wanted.split(".")[:2] == monai.__version__.split(".")[:2]:
        return ""
    return (f" (the bundle was made with MONAI {wanted}, this worker has {monai.__version__}: "
            f"a worker Python with monai=={wanted} may run it)")


def in_memory_transforms(compose, kind: str):
    """The transforms of a ``Compose`` with loaders made in-memory (``kind="pre"``) or savers left out ("post")."""
    from monai.transforms import Compose, LoadImage, LoadImaged, SaveImage, SaveImaged

    if not isinstance(compose, Compose):
        raise PackageError(f"the bundle's {kind}processing is not a MONAI Compose ({type(compose).__name__})")
    kept = []
    for transform in compose.flatten().transforms:
        if isinstance(transform, (SaveImage, SaveImaged)):
            continue
        if isinstance(transform, LoadImage):
            raise PackageError("the bundle loads images with the array transform LoadImage; "
                               "MonaiDeployer supports bundles that use the dictionary transform LoadImaged")
        kept.append(LoadedImaged(transform) if isinstance(transform, LoadImaged) else transform)
    compose.transforms = kept
    return compose


class LoadedImaged:
    """Stands where the bundle's ``LoadImaged`` stood: the data already holds the image as a ``MetaTensor``.

    It keeps what the loader was asked for: its keys, its dtype, channel first, the meta dict.
    """

    def __init__(self, loader):
        import torch
        from monai.utils.type_conversion import get_equivalent_dtype

        options = loader._loader
        self.keys = tuple(loader.keys)
        self.meta_key_postfix = dict(zip(self.keys, loader.meta_key_postfix, strict=True))
        self.image_only = options.image_only
        self.dtype = None if options.dtype is None else get_equivalent_dtype(options.dtype, torch.Tensor)
        self.ensure_channel_first = options.ensure_channel_first

    def __call__(self, data):
        from monai.transforms import EnsureChannelFirst

        data = dict(data)
        for key in self.keys:
            image = data[key] if self.dtype is None else data[key].to(self.dtype)
            if self.ensure_channel_first:
                image = EnsureChannelFirst()(image)
            data[key] = image
            if not self.image_only:
                data[f"{key}_{self.meta_key_postfix[key]}"] = image.meta
        return data
