"""The TorchScript sidecar: what a bare TorchScript file cannot carry, in a small JSON file beside it.

``model.ts`` (or ``.zip``/``.pt``) is paired with ``model.json``. Every key is optional; without a
sidecar the model sees the whole volume in one forward pass, axes ordered as MONAI's loader
orders them (channel, I, J, K), with no resampling and no intensity change, and its output is
reduced by argmax over channels (or a 0.5 threshold when there is one channel).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import PackageError
from .kind import Settings

ACTIVATIONS = ("none", "softmax", "sigmoid")
BLEND_MODES = ("constant", "gaussian")
INTERPOLATIONS = ("linear", "nearest")
SCHEMA = {
    "name": str,
    "version": str,
    "description": str,
    "input": {"channels": int, "orientation": str, "spacing": list, "intensity": dict, "crop_foreground": dict},
    "inference": {"roi_size": list, "sw_batch_size": int, "overlap": float, "mode": str},
    "output": {"activation": str, "threshold": float, "interpolation": str},
    "labels": dict,
    "requirements": dict,
}
INTENSITY_KEYS = {"a_min", "a_max", "b_min", "b_max", "clip"}
CROP_DEFAULTS = {"threshold": 0.0, "margin": 10}  # MONAI's CropForeground (voxels above 0) as Auto3DSeg uses it


def sidecar_path_for(model_path: str) -> str:
    """``model.ts`` -> ``model.json`` beside it."""
    return os.path.splitext(model_path)[0] + ".json"


@dataclass(frozen=True)
class TorchScriptInput(Settings):
    """What the volume becomes before the forward pass."""

    channels: int | None = None  # None: whatever the volume has
    orientation: str | None = None  # axis codes such as "RAS"
    spacing: list | None = None  # mm
    intensity: dict | None = None  # ScaleIntensityRange's a_min, a_max, b_min, b_max (, clip)
    crop_foreground: dict | None = None  # threshold (input units) and margin (voxels); None: the whole volume


@dataclass(frozen=True)
class TorchScriptInference(Settings):
    """Whole volume in one forward pass, or MONAI's sliding window over ``roi_size``."""

    roi_size: list | None = None
    sw_batch_size: int = 1
    overlap: float = 0.25
    mode: str = "constant"


@dataclass(frozen=True)
class TorchScriptOutput(Settings):
    """How scores become labels on the input's grid: scores interpolated linearly (as MONAI resamples them)
    then argmax, or "nearest": argmax on the working grid, nearest label (faster, blockier edges)."""

    activation: str = "none"
    threshold: float = 0.5
    interpolation: str = "linear"


@dataclass(frozen=True)
class TorchScriptSettings(Settings):
    """A TorchScript model's settings: its sidecar's ``input``, ``inference`` and ``output`` sections."""

    input: TorchScriptInput = TorchScriptInput()
    inference: TorchScriptInference = TorchScriptInference()
    output: TorchScriptOutput = TorchScriptOutput()

    @property
    def channels(self) -> int | None:
        return self.input.channels


def read_sidecar(path: str) -> dict:
    """Parse and check a sidecar file; the result has every key, defaults filled in."""
    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except json.JSONDecodeError as error:
        raise PackageError(f"sidecar {path} is not valid JSON: {error.msg} at line {error.lineno}") from error
    except OSError as error:
        raise PackageError(f"cannot read sidecar {path}: {error.strerror}") from error
    return parse_sidecar(document, path)


def parse_sidecar(document: dict, where: str = "sidecar") -> dict:
    if not isinstance(document, dict):
        raise PackageError(f"{where}: the top level must be a JSON object")
    _check_keys(document, SCHEMA, where)
    settings = TorchScriptSettings().to_dict()  # the defaults, as sections to update
    for section in ("input", "inference", "output"):
        settings[section].update({k: v for k, v in document.get(section, {}).items()})
    _check_values(settings, where)
    labels, colors = parse_labels(document.get("labels", {}), where)
    requirements = document.get("requirements", {})
    if not all(isinstance(value, str) for value in requirements.values()):
        raise PackageError(f"{where}: requirements must map package names to version specifiers such as \">=2.0\"")
    return {
        "name": document.get("name", ""),
        "version": document.get("version", ""),
        "description": document.get("description", ""),
        "settings": TorchScriptSettings.from_dict(settings),
        "labels": labels,
        "colors": colors,
        "requirements": dict(requirements),
    }


def parse_labels(document: dict, where: str) -> tuple[dict, dict]:
    """``{"1": "organ"}`` or ``{"1": {"name": "organ", "color": [r, g, b]}}`` -> names and colours by value."""
    labels, colors = {}, {}
    for key, entry in document.items():
        try:
            value = int(key)
        except ValueError:
            raise PackageError(f"{where}: label value {key!r} is not a whole number") from None
        if value <= 0:
            raise PackageError(f"{where}: label value {value} must be positive (0 is the background)")
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise PackageError(f"{where}: label {value} needs a name")
        labels[value] = entry["name"]
        if "color" in entry:
            color = entry["color"]
            if len(color) not in (3, 4) or not all(isinstance(c, (int, float)) and 0 <= c <= 1 for c in color):
                raise PackageError(f"{where}: label {value}'s color must be 3 numbers from 0 to 1")
            colors[value] = tuple(float(c) for c in color[:3])
    return labels, colors


def _check_keys(document: dict, schema: dict, where: str) -> None:
    for key, value in document.items():
        if key not in schema:
            raise PackageError(f"{where}: unknown key {key!r} (known: {', '.join(schema)})")
        expected = schema[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise PackageError(f"{where}: {key!r} must be an object")
            _check_keys(value, expected, f"{where}: {key}")
        elif value is not None and not isinstance(value, (int, float) if expected is float else expected):
            raise PackageError(f"{where}: {key!r} must be a {expected.__name__}")


def _check_values(settings: dict, where: str) -> None:
    source, inference, output = settings["input"], settings["inference"], settings["output"]
    spacing = source["spacing"]
    if spacing is not None and (len(spacing) != 3 or not all(isinstance(v, (int, float)) and v > 0 for v in spacing)):
        raise PackageError(f"{where}: input.spacing must be 3 positive numbers (mm)")
    if source["orientation"] is not None and (
        len(source["orientation"]) != 3 or set(source["orientation"].upper()) - set("RLAPSI")
    ):
        raise PackageError(f"{where}: input.orientation must be 3 axis codes such as \"RAS\"")
    intensity = source["intensity"]
    if intensity is not None and not {"a_min", "a_max", "b_min", "b_max"} <= set(intensity) <= INTENSITY_KEYS:
        raise PackageError(f"{where}: input.intensity needs a_min, a_max, b_min, b_max (and optionally clip)")
    crop = source["crop_foreground"]
    if crop is not None:
        if set(crop) - set(CROP_DEFAULTS):
            raise PackageError(f"{where}: input.crop_foreground takes threshold and margin")
        source["crop_foreground"] = crop = {**CROP_DEFAULTS, **crop}
        if not isinstance(crop["threshold"], (int, float)) or not isinstance(crop["margin"], int) or crop["margin"] < 0:
            raise PackageError(f"{where}: input.crop_foreground needs a number threshold and a margin of 0 or more "
                               "voxels")
    if source["channels"] is not None and source["channels"] < 1:
        raise PackageError(f"{where}: input.channels must be at least 1")
    roi = inference["roi_size"]
    if roi is not None and (len(roi) != 3 or not all(isinstance(v, int) and v > 0 for v in roi)):
        raise PackageError(f"{where}: inference.roi_size must be 3 positive whole numbers")
    if not 0 <= inference["overlap"] < 1:
        raise PackageError(f"{where}: inference.overlap must be at least 0 and less than 1")
    if inference["sw_batch_size"] < 1:
        raise PackageError(f"{where}: inference.sw_batch_size must be at least 1")
    if inference["mode"] not in BLEND_MODES:
        raise PackageError(f"{where}: inference.mode must be one of {', '.join(BLEND_MODES)}")
    if output["activation"] not in ACTIVATIONS:
        raise PackageError(f"{where}: output.activation must be one of {', '.join(ACTIVATIONS)}")
    if output["interpolation"] not in INTERPOLATIONS:
        raise PackageError(f"{where}: output.interpolation must be one of {', '.join(INTERPOLATIONS)}")
