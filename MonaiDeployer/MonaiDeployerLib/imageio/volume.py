"""A volume as a voxel array indexed [i, j, k] (or [i, j, k, channel]) plus its 4x4 IJK-to-RAS matrix.

NRRD and NIfTI in and out. A fourth axis holds channels: several input images on one grid (MR
sequences), or a result's overlapping segments, one 0/1 mask per label (label value = channel + 1).

Slicer works in RAS, NIfTI stores RAS affines and Slicer writes NRRD in LPS: every reader and
writer here converts to and from one RAS matrix, oblique directions included, so that a result
lands voxel for voxel on its input's grid. nibabel and pynrrd are imported only when a file is
read or written (Slicer imports this module at start-up).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, OutputError
from ..runs.leftovers import PARTIAL_PREFIX, noted_partial

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
PALETTE = ((0.90, 0.35, 0.25), (0.25, 0.65, 0.90), (0.95, 0.80, 0.25), (0.45, 0.80, 0.35),
           (0.70, 0.45, 0.85), (0.95, 0.55, 0.75), (0.35, 0.85, 0.80), (0.85, 0.60, 0.35))
SUFFIXES = (".seg.nrrd", ".nii.gz", ".nrrd", ".nii")
MAX_CHANNELS = 16
SEGMENTATION_FIELDS = {
    "Segmentation_MasterRepresentation": "Binary labelmap",
    "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
    "Segmentation_ReferenceImageExtentOffset": "0 0 0",
}


@dataclass
class Volume:
    """Voxels indexed [i, j, k] (as NIfTI and MONAI's loader order them) and where they lie in RAS.

    A fourth axis, last, holds channels; ``shape[:3]`` is always the grid.
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self):
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=np.float64)

    @property
    def shape(self) -> tuple:
        return tuple(self.array.shape)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    def same_grid(self, other: Volume, tolerance: float = 1e-4) -> bool:
        """True when both volumes have the same shape and the same IJK-to-RAS matrix."""
        return self.shape[:3] == other.shape[:3] and np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=tolerance)


def label_color(value: int, colors: dict) -> tuple:
    """A label's colour: the package's, else one of a fixed palette (the same in files and in Slicer)."""
    return tuple(colors.get(value, PALETTE[(value - 1) % len(PALETTE)]))


def volume_suffix(path: str) -> str:
    """The recognised suffix of a volume file name (".nii.gz", ".seg.nrrd"...), or "" when none."""
    name = os.path.basename(str(path)).lower()
    return next((suffix for suffix in SUFFIXES if name.endswith(suffix)), "")


def file_suffix(path: str) -> str:
    """A volume file's recognised suffix, else the last one (".dcm")."""
    return volume_suffix(path) or os.path.splitext(str(path))[1]


def check_volume(volume: Volume) -> None:
    """Refuse what no 3D segmentation model can take, with the reason in one line.

    A volume is [i, j, k], or [i, j, k, C] with 2 to 16 channels on the last axis.
    """
    array = volume.array
    if array.ndim not in (3, 4):
        kind = "2D" if array.ndim < 3 else f"{array.ndim}D"
        raise InputError(f"the input is {kind} (shape {_shape_text(array.shape)}); a 3D volume is needed, "
                         f"with 2 to {MAX_CHANNELS} channels on a fourth axis at most")
    if array.ndim == 4 and not 2 <= array.shape[3] <= MAX_CHANNELS:
        raise InputError(f"the input has {array.shape[3]} channels on its fourth axis (shape "
                         f"{_shape_text(array.shape)}); 2 to {MAX_CHANNELS} channels are supported")
    if min(array.shape[:3]) < 2:
        raise InputError(f"the input is 2D (shape {_shape_text(array.shape)}); a 3D volume is needed")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"the input's voxel type {array.dtype} is not a real number type")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(f"the input has {bad} NaN or infinite voxels; fill or mask them before segmenting")
    matrix = volume.ijk_to_ras
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise InputError("the input's IJK-to-RAS matrix is not a valid 4x4 geometry")


def squeeze_trailing_axes(array: np.ndarray) -> np.ndarray:
    """Drop singleton axes after the third (a NIfTI of shape X, Y, Z, 1 is a 3D volume)."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def stack_channels(volumes: list[Volume], names: list[str] | None = None) -> Volume:
    """Volumes on one grid as the channels of one volume [i, j, k, C], in the given order.

    One volume is returned as it is (it may already have channels). ``names`` (file or node names)
    say in errors which input does not fit; by default "input 1", "input 2"...
    """
    volumes = list(volumes)
    names = [str(name) for name in names] if names else [f"input {number}" for number in range(1, len(volumes) + 1)]
    if not volumes:
        raise InputError("no input volume given")
    if len(volumes) == 1:
        return volumes[0]
    first = volumes[0]
    for volume, name in zip(volumes, names, strict=True):
        if volume.array.ndim != 3:
            raise InputError(f"{name} has shape {_shape_text(volume.shape)}; each of several inputs must be one "
                             "3D image (one channel)")
        if not volume.same_grid(first):
            difference = (f"shape {_shape_text(volume.shape)} against {_shape_text(first.shape)}"
                          if volume.shape != first.shape else "same shape, different position, spacing or axes")
            raise InputError(f"{name} is not on the grid of {names[0]} ({difference}); "
                             f"resample it onto {names[0]} first")
    return Volume(np.stack([volume.array for volume in volumes], axis=-1), first.ijk_to_ras.copy())


def read_volume(path: str) -> Volume:
    """Read a .nrrd, .nii or .nii.gz volume with its full geometry; a 4D file's channels come last."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"input file not found: {path}")
    suffix = volume_suffix(path)
    try:
        if suffix in (".nrrd", ".seg.nrrd"):
            return _read_nrrd(path)
        if suffix in (".nii", ".nii.gz"):
            return _read_nifti(path)
    except InputError:
        raise
    except Exception as error:  # the readers raise many types for one cause: an unreadable file
        raise InputError(f"cannot read {path}: {_one_line(error)}") from error
    raise InputError(f"unsupported input file type: {path} (use .nrrd, .nii or .nii.gz)")


def write_volume(path: str, volume: Volume, labels: dict | None = None, colors: dict | None = None,
                 ledger: str | None = None) -> str:
    """Write .nrrd, .nii, .nii.gz or .seg.nrrd (a labelmap whose segments carry ``labels``' names).

    A 4D result (overlapping segments, one mask per label) goes to .seg.nrrd as one layer per
    segment, or to .nii/.nii.gz as a 4D image; a .nrrd labelmap cannot hold it and is refused.
    The file appears whole or not at all: it is written beside its target and renamed into place.
    ``ledger``: a runner's private folder, where the partial file is noted while it is written, so
    that it is removed even if this process is killed meanwhile (see ``leftovers``).
    """
    path = os.fspath(path)
    check_output(path, _channel_names(volume, labels or {}) if volume.array.ndim == 4 else None)
    suffix = volume_suffix(path)
    return write_whole(path, lambda partial: _write_partial(partial, suffix, volume, labels, colors), ledger)


def write_whole(path: str, write, ledger: str | None = None) -> str:
    """``write(partial)`` writes a file beside ``path``, renamed into place once whole: ``path`` appears whole or not
    at all. ``ledger``: as in ``write_volume``. An error other than an ``OutputError`` is named as one."""
    path = os.fspath(path)
    partial = os.path.join(os.path.dirname(os.path.abspath(path)),
                           f"{PARTIAL_PREFIX}{uuid.uuid4().hex}{file_suffix(path)}")
    with noted_partial(ledger, partial):  # noted before it exists: a kill at any moment leaves it listed
        try:
            os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError as error:
            raise OutputError(f"output is not writable: {path} ({error.strerror})") from error
        try:
            write(partial)
            os.replace(partial, path)
        except BaseException as error:
            if os.path.exists(partial):
                os.remove(partial)
            if isinstance(error, Exception) and not isinstance(error, OutputError):
                raise OutputError(f"cannot write {path}: {_one_line(error)}") from error
            raise
    return path


def _write_partial(partial: str, suffix: str, volume: Volume, labels: dict | None, colors: dict | None) -> None:
    if suffix == ".seg.nrrd" and volume.array.ndim == 4:
        _write_layered_seg_nrrd(partial, volume, labels or {}, colors or {})
    elif suffix == ".seg.nrrd":
        _write_seg_nrrd(partial, volume, labels or {}, colors or {})
    else:
        {".nrrd": _write_nrrd, ".nii": _write_nifti, ".nii.gz": _write_nifti}[suffix](partial, volume)


def check_output(path: str, overlapping_segments: list | None = None) -> None:
    """Fail before any work is done when the output cannot be created (or cannot hold overlapping segments)."""
    if not volume_suffix(path):
        raise OutputError(f"unsupported output file type: {path} (use .nrrd, .seg.nrrd, .nii or .nii.gz)")
    if overlapping_segments is not None and volume_suffix(path) == ".nrrd":
        raise OutputError(f"cannot write {path}: the {len(overlapping_segments)} segments "
                          f"({', '.join(overlapping_segments)}) may overlap, and a .nrrd labelmap holds one label per "
                          "voxel; write .seg.nrrd (one layer per segment) or .nii.gz instead")
    check_writable(path)


def check_writable(path: str) -> None:
    """Fail before any work is done when a file cannot be created at ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"output folder does not exist: {folder}")
    if os.path.isdir(path):
        raise OutputError(f"output path is a folder: {path}")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise OutputError(f"output is not writable: {path}")


def _read_nifti(path: str) -> Volume:
    import nibabel

    image = nibabel.load(path)
    array = squeeze_trailing_axes(np.asanyarray(image.dataobj))
    return Volume(array, image.affine)


def _write_nifti(path: str, volume: Volume) -> None:
    import nibabel

    image = nibabel.Nifti1Image(volume.array, volume.ijk_to_ras)
    image.set_qform(volume.ijk_to_ras, code=1)
    image.set_sform(volume.ijk_to_ras, code=1)
    nibabel.save(image, path)


def _read_nrrd(path: str) -> Volume:
    import nrrd

    array, header = nrrd.read(path, index_order="F")
    directions = np.asarray(header.get("space directions", np.eye(3)), dtype=np.float64)
    if array.ndim == 4 and directions.shape == (4, 3):
        array, directions = _nrrd_channels_last(array, directions)
    array = squeeze_trailing_axes(array)
    if array.ndim not in (3, 4):
        return Volume(array)  # check_volume names the problem; no geometry to read
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    if directions.shape != (3, 3) or not np.all(np.isfinite(directions)):
        raise InputError(f"cannot read {path}: its space directions are not a 3D geometry")
    matrix = np.eye(4)
    matrix[:3, :3] = directions.T
    matrix[:3, 3] = origin
    if _nrrd_space_is_lps(header.get("space", "left-posterior-superior")):
        matrix[:3, :] = LPS_TO_RAS @ matrix[:3, :]
    return Volume(array, matrix)


def _nrrd_channels_last(array: np.ndarray, directions: np.ndarray) -> tuple:
    """A 4D NRRD's one non-spatial axis (vector components, segmentation layers; first, as Slicer writes them) last."""
    spatial = np.all(np.isfinite(directions), axis=1)  # pynrrd reads "none" directions as NaN
    if np.count_nonzero(spatial) != 3:
        return array, directions
    return np.moveaxis(array, int(np.flatnonzero(~spatial)[0]), -1), directions[spatial]


def _nrrd_space_is_lps(space: str) -> bool:
    space = str(space).lower()
    if space in ("left-posterior-superior", "lps"):
        return True
    if space in ("right-anterior-superior", "ras", "scanner-xyz", "3d-right-handed"):
        return False
    raise InputError(f"unsupported NRRD space {space!r} (use RAS or LPS)")


def _nrrd_header(volume: Volume) -> dict:
    lps = LPS_TO_RAS @ volume.ijk_to_ras[:3, :]
    return {
        "space": "left-posterior-superior",
        "space directions": lps[:, :3].T,
        "space origin": lps[:, 3],
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }


def _write_nrrd(path: str, volume: Volume, extra_fields: dict | None = None) -> None:
    import nrrd

    header = _nrrd_header(volume)
    header.update(extra_fields or {})
    nrrd.write(path, np.ascontiguousarray(volume.array), header, index_order="F")


def _write_seg_nrrd(path: str, volume: Volume, labels: dict, colors: dict) -> None:
    """Slicer's segmentation file: one shared labelmap layer whose segments carry names and colours."""
    fields = dict(SEGMENTATION_FIELDS)
    for index, (value, name) in enumerate(sorted(labels.items())):
        fields.update(_segment_fields(index, value, name, colors, volume.shape, layer=0, label_value=value))
    _write_nrrd(path, volume, fields)


def _write_layered_seg_nrrd(path: str, volume: Volume, labels: dict, colors: dict) -> None:
    """Slicer's multi-layer segmentation file: overlapping segments, each a 0/1 mask in a layer of its own.

    The layers are the NRRD's first axis (kind "list", no space direction), as Slicer writes them.
    """
    import nrrd

    fields = dict(SEGMENTATION_FIELDS)
    for channel, name in enumerate(_channel_names(volume, labels)):
        fields.update(_segment_fields(channel, channel + 1, name, colors, volume.shape[:3], layer=channel,
                                      label_value=1))
    header = _nrrd_header(volume)
    header.update({"kinds": ["list", "domain", "domain", "domain"],
                   "space directions": np.vstack([np.full(3, np.nan), header["space directions"]]), **fields})
    layers = np.moveaxis((volume.array != 0).astype(np.uint8), -1, 0)
    nrrd.write(path, np.ascontiguousarray(layers), header, index_order="F")


def _segment_fields(index: int, value: int, name: str, colors: dict, shape: tuple, layer: int,
                    label_value: int) -> dict:
    """One segment's header fields in a .seg.nrrd (ID, name, colour, where its voxels are)."""
    color = label_color(value, colors)
    return {
        f"Segment{index}_ID": f"Segment_{value}",
        f"Segment{index}_Name": str(name),
        f"Segment{index}_NameAutoGenerated": "0",
        f"Segment{index}_Color": " ".join(f"{c:g}" for c in color[:3]),
        f"Segment{index}_ColorAutoGenerated": "0",
        f"Segment{index}_LabelValue": str(int(label_value)),
        f"Segment{index}_Layer": str(layer),
        f"Segment{index}_Extent": " ".join(f"0 {size - 1}" for size in shape),
        f"Segment{index}_Tags": "|",
    }


def _channel_names(volume: Volume, labels: dict) -> list:
    """The segment name of each channel of a 4D result (channel c has label value c + 1)."""
    return [str(labels.get(value, f"label_{value}")) for value in range(1, volume.array.shape[3] + 1)]


def _shape_text(shape: tuple) -> str:
    return "x".join(str(size) for size in shape)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
