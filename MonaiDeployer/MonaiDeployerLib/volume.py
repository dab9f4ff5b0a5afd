"""A volume as a voxel array indexed [i, j, k] plus its 4x4 IJK-to-RAS matrix; NRRD and NIfTI in and out.

Slicer works in RAS, NIfTI stores RAS affines and Slicer writes NRRD in LPS: every reader and
writer here converts to and from one RAS matrix, oblique directions included, so that a result
lands voxel for voxel on its input's grid. nibabel and pynrrd are imported only when a file is
read or written (Slicer imports this module at start-up).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError, OutputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
SUFFIXES = (".seg.nrrd", ".nii.gz", ".nrrd", ".nii")


@dataclass
class Volume:
    """Voxels indexed [i, j, k] (as NIfTI and MONAI's loader order them) and where they lie in RAS."""

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


def volume_suffix(path: str) -> str:
    """The recognised suffix of a volume file name (".nii.gz", ".seg.nrrd"...), or "" when none."""
    name = os.path.basename(str(path)).lower()
    return next((suffix for suffix in SUFFIXES if name.endswith(suffix)), "")


def check_volume(volume: Volume) -> None:
    """Refuse what no 3D segmentation model can take, with the reason in one line."""
    array = volume.array
    if array.ndim != 3:
        kind = "2D" if array.ndim < 3 else f"{array.ndim}D"
        raise InputError(f"the input is {kind} (shape {_shape_text(array.shape)}); a 3D volume is needed")
    if min(array.shape) < 2:
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


def read_volume(path: str) -> Volume:
    """Read a .nrrd, .nii or .nii.gz volume with its full geometry."""
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


def write_volume(path: str, volume: Volume, labels: dict | None = None, colors: dict | None = None) -> str:
    """Write .nrrd, .nii, .nii.gz or .seg.nrrd (a labelmap whose segments carry ``labels``' names).

    The file appears whole or not at all: it is written beside its target and renamed into place.
    """
    path = os.fspath(path)
    check_output(path)
    suffix = volume_suffix(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        handle, partial = tempfile.mkstemp(prefix=".partial-", suffix=suffix, dir=folder)
    except OSError as error:
        raise OutputError(f"output is not writable: {path} ({error.strerror})") from error
    os.close(handle)
    try:
        if suffix == ".seg.nrrd":
            _write_seg_nrrd(partial, volume, labels or {}, colors or {})
        else:
            {".nrrd": _write_nrrd, ".nii": _write_nifti, ".nii.gz": _write_nifti}[suffix](partial, volume)
        os.replace(partial, path)
    except BaseException as error:
        if os.path.exists(partial):
            os.remove(partial)
        if isinstance(error, Exception) and not isinstance(error, OutputError):
            raise OutputError(f"cannot write {path}: {_one_line(error)}") from error
        raise
    return path


def check_output(path: str) -> None:
    """Fail before any work is done when the output cannot be created."""
    if not volume_suffix(path):
        raise OutputError(f"unsupported output file type: {path} (use .nrrd, .seg.nrrd, .nii or .nii.gz)")
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
    array = squeeze_trailing_axes(array)
    if array.ndim != 3:
        return Volume(array)  # check_volume names the problem; no geometry to read
    directions = np.asarray(header.get("space directions", np.eye(3)), dtype=np.float64)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    if directions.shape != (3, 3) or not np.all(np.isfinite(directions)):
        raise InputError(f"cannot read {path}: its space directions are not a 3D geometry")
    matrix = np.eye(4)
    matrix[:3, :3] = directions.T
    matrix[:3, 3] = origin
    if _nrrd_space_is_lps(header.get("space", "left-posterior-superior")):
        matrix[:3, :] = LPS_TO_RAS @ matrix[:3, :]
    return Volume(array, matrix)


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
    fields = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    extent = " ".join(f"0 {size - 1}" for size in volume.shape)
    for index, (value, name) in enumerate(sorted(labels.items())):
        color = colors.get(value, (0.5, 0.5, 0.5))
        fields.update({
            f"Segment{index}_ID": f"Segment_{value}",
            f"Segment{index}_Name": str(name),
            f"Segment{index}_NameAutoGenerated": "0",
            f"Segment{index}_Color": " ".join(f"{c:g}" for c in color[:3]),
            f"Segment{index}_ColorAutoGenerated": "0",
            f"Segment{index}_LabelValue": str(int(value)),
            f"Segment{index}_Layer": "0",
            f"Segment{index}_Extent": extent,
            f"Segment{index}_Tags": "|",
        })
    _write_nrrd(path, volume, fields)


def _shape_text(shape: tuple) -> str:
    return "x".join(str(size) for size in shape)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
