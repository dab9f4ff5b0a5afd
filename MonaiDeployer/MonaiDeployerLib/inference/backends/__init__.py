"""One backend per package kind (``PackageKind.create_backend``), each behind
``run(package, volume, device, report, work_folder) -> Segmented``.

``work_folder`` is the run's private folder, removed however the run ends: a backend that hands
files to a model (a Deploy app) writes them there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...errors import InputError, PackageError


@dataclass
class Segmented:
    """A backend's answer: a label array on the input grid, the names of its values, stage timings."""

    labelmap: np.ndarray
    labels: dict
    colors: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    model_cached: bool = False
    others: list = field(default_factory=list)  # (name, labelmap, labels) of further outputs an app wrote
    notes: list = field(default_factory=list)  # what the user should know about how it ran (one line each)


def input_channels(volume) -> int:
    """Channels of a volume: the fourth axis of [i, j, k, C], else one."""
    return volume.array.shape[3] if volume.array.ndim == 4 else 1


def tensor_view(array: np.ndarray):
    """The array as a torch tensor sharing its memory, or a float32 copy where torch cannot share it.

    torch takes neither another byte order nor negative strides (a flipped view), nor, before 2.3, uint16/uint32.
    """
    import torch

    try:
        return torch.from_numpy(array)
    except (TypeError, ValueError, RuntimeError):
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def channel_first_float32(volume):
    """The volume's voxels as a C-ordered float32 tensor [C, i, j, k], made in one pass.

    A volume from Slicer or NIfTI arrives in Fortran order; MONAI's resampling reads a C-ordered
    source about twice as fast, and copying the order while converting the type costs one pass.
    """
    import torch

    source = tensor_view(volume.array)
    source = source.movedim(-1, 0) if source.ndim == 4 else source[None]
    converted = torch.empty(source.shape, dtype=torch.float32)
    converted.copy_(source)
    return converted


def check_input_channels(who: str, expected: int | None, names: list, volume) -> None:
    """Refuse, naming the channels the model wants, an input with another number of channels."""
    given = input_channels(volume)
    if expected is not None and expected != given:
        listed = f" ({', '.join(names)})" if names else ""
        raise InputError(f"{who} takes {expected} input channels{listed}; the input has {given}")


def resolve_device(requested: str):
    """"auto" is CUDA when this worker's torch can use a GPU, else the CPU; "cuda" without one is an error."""
    import torch

    if requested not in ("auto", "cpu", "cuda") and not requested.startswith("cuda:"):
        raise PackageError(f"unknown device {requested!r} (use auto, cpu or cuda)")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise PackageError(f"device {requested} was asked for, but this worker's torch {torch.__version__} "
                           f"({build}) sees no usable GPU; choose device cpu or auto")
    return torch.device(requested)


def one_line_cause(error: BaseException) -> str:
    """The line of a (possibly multi-line TorchScript) error message that says what went wrong.

    Wrappers such as MONAI's "applying transform ..." are looked through to the error they wrap.
    """
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    causes = [line for line in lines if "Error:" in line]
    text = causes[-1].split("Error:", 1)[1].strip() if causes else (lines[0] if lines else type(error).__name__)
    return text


def scan_interval(shape, roi_size, overlap: float) -> tuple:
    """MONAI's step between windows: the window less its overlap, at least 1; a window as long as the axis, once."""
    return tuple(roi if roi == size else max(1, int(roi * (1 - overlap)))
                 for size, roi in zip(shape, roi_size, strict=True))


def sliding_window_count(shape, roi_size, overlap: float) -> int:
    """How many windows MONAI's sliding window visits."""
    count = 1
    for size, roi, interval in zip(shape, roi_size, scan_interval(shape, roi_size, overlap), strict=True):
        count *= 1 if size <= roi else math.ceil((size - roi) / interval) + 1
    return count


def resample_nearest(output, volume):
    """A channel-first ``MetaTensor`` of labels or masks, resampled (nearest) onto the input's grid by affine."""
    import torch
    from monai.transforms import SpatialResample

    affine = torch.as_tensor(volume.ijk_to_ras, dtype=torch.float64)
    resample = SpatialResample(mode="nearest", padding_mode="zeros", dtype=torch.float32)
    return resample(output, dst_affine=affine, spatial_size=volume.shape[:3]).as_tensor()


def on_input_grid(output, volume) -> np.ndarray:
    """A labelmap ``Volume`` an app wrote, on the input's grid: as it is when the grids match, else resampled.

    numpy only: a Deploy app or a MAP runs in a worker that may have neither torch nor MONAI.
    """
    if output.array.ndim != 3:
        raise PackageError(f"the output has shape {output.shape}; a 3D labelmap was expected")
    array = output.array if output.same_grid(volume) else labels_on_grid(output, volume.shape[:3], volume.ijk_to_ras)
    if np.any(array < 0) or np.any(array != np.round(array)):
        raise PackageError("the output holds values that are not label values (negative or fractional)")
    return array.astype(np.uint8 if array.max(initial=0) < 256 else np.int16)


def labels_on_grid(labels, shape: tuple, ijk_to_ras: np.ndarray) -> np.ndarray:
    """A 3D label ``Volume`` resampled (nearest voxel centre) onto the grid ``shape``/``ijk_to_ras``; 0 outside it.

    One target slice at a time, so memory stays at one slice of indices. A target voxel centre exactly
    half way between two source centres (a grid of half the spacing, aligned) may go to the other
    neighbour than MONAI's resampling picks: its float arithmetic breaks such ties either way.
    """
    to_source = np.linalg.inv(labels.ijk_to_ras) @ np.asarray(ijk_to_ras, dtype=np.float64)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    in_plane = to_source[:3, 0, None, None] * i + to_source[:3, 1, None, None] * j + to_source[:3, 3, None, None]
    source_shape = np.asarray(labels.shape[:3])[:, None, None]
    result = np.zeros(shape, dtype=labels.array.dtype)
    for k in range(shape[2]):
        index = np.rint(in_plane + to_source[:3, 2, None, None] * k).astype(np.int64)
        inside = np.all((index >= 0) & (index < source_shape), axis=0)
        result[:, :, k][inside] = labels.array[index[0][inside], index[1][inside], index[2][inside]]
    return result


def argmax_over_channels(scores):
    """``torch.argmax(scores, dim=0)`` (first maximum wins) as few whole-volume passes: ten times faster on CPU."""
    import torch

    best = scores[0].clone()
    labels = torch.zeros(scores.shape[1:], dtype=torch.uint8 if scores.shape[0] <= 256 else torch.int32)
    for channel in range(1, scores.shape[0]):
        better = scores[channel] > best
        labels[better] = channel
        best = torch.maximum(best, scores[channel])
    return labels
