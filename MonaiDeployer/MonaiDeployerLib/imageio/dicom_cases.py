"""DICOM series as cases of a batch: found among files, read with their exact geometry, and their segmentations
written back as DICOM SEG objects that reference the series they were made from.

A series is read with highdicom (slices sorted by position, the modality transform applied, so CT voxels are
HU) and placed by its affine, as ``dicom.read_dicom_seg`` places a SEG. A SEG is written frame by frame onto the
source slices themselves: each source slice's position must fall on the labelmap's grid, or nothing is written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, OutputError
from .dicom import from_highdicom_volume
from .volume import LPS_TO_RAS, Volume, label_color

PREAMBLE_BYTES = 128
NOT_IMAGES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG", "DOC"}
HEADER_TAGS = ["SeriesInstanceUID", "PatientID", "PatientName", "StudyID", "StudyDate", "StudyInstanceUID",
               "SeriesNumber", "SeriesDescription", "Modality", "ImagePositionPatient"]
NAME_PART_CHARACTERS = 40
GRID_TOLERANCE_VOXELS = 1e-3


@dataclass(frozen=True)
class DicomSeries:
    """The files of one image series, and what names it: ``name`` is safe as a file name."""

    uid: str
    files: tuple
    patient: str
    study: str
    series: str

    @property
    def name(self) -> str:
        return "_".join(safe_name(part) for part in (self.patient, self.study, self.series))


def safe_name(text: str) -> str:
    """Letters, digits, ".", "-" and "_" only, at most ``NAME_PART_CHARACTERS`` of them; never empty."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip(".-")[:NAME_PART_CHARACTERS] or "unnamed"


def is_dicom_file(path: str) -> bool:
    """A DICOM Part 10 file: "DICM" after its 128-byte preamble (read without parsing anything else)."""
    try:
        with open(path, "rb") as stream:
            return stream.read(PREAMBLE_BYTES + 4)[PREAMBLE_BYTES:] == b"DICM"
    except OSError:
        return False


def find_series(paths: list) -> tuple:
    """The image series among DICOM files (segmentations, structure sets, reports left out), in the order of their
    first file, and {path: why} for the files whose header cannot be read."""
    import pydicom

    found, unreadable = {}, {}
    for path in paths:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
        except Exception as error:  # pydicom raises many types for one cause: an unreadable file
            unreadable[path] = f"cannot read the DICOM file {path}: {' '.join(str(error).split())}"
            continue
        if str(header.get("Modality", "")).upper() in NOT_IMAGES or "ImagePositionPatient" not in header:
            continue
        uid = str(header.get("SeriesInstanceUID", ""))
        if uid not in found:
            found[uid] = (header, [])
        found[uid][1].append(path)
    return [_described(uid, header, files) for uid, (header, files) in found.items()], unreadable


def _described(uid: str, header, files: list) -> DicomSeries:
    patient = str(header.get("PatientID", "") or header.get("PatientName", "") or "patient")
    study = str(header.get("StudyID", "") or header.get("StudyDate", "") or
                str(header.get("StudyInstanceUID", "study"))[-8:])
    number = header.get("SeriesNumber", "")
    description = str(header.get("SeriesDescription", "")).strip()
    series = "-".join(part for part in (f"S{number}" if number != "" else "", description) if part) or uid[-8:]
    return DicomSeries(uid, tuple(files), patient, study, series)


def read_series(files) -> Volume:
    """One series as a volume [i, j, k] = [column, row, slice] in RAS, float32 voxels after the modality transform."""
    import highdicom
    import pydicom

    try:
        datasets = [pydicom.dcmread(path) for path in files]
        volume = highdicom.get_volume_from_series(datasets, dtype=np.float32)
    except Exception as error:  # pydicom and highdicom raise many types for one cause: a series not usable
        folder = os.path.dirname(os.path.abspath(files[0]))
        raise InputError(f"cannot read the DICOM series in {folder}: {' '.join(str(error).split())}") from error
    return _slices_along_normal(from_highdicom_volume(volume))


def _slices_along_normal(volume: Volume) -> Volume:
    """k along row x column direction, as Slicer's DICOM reader stacks slices (highdicom may stack them the other
    way): the same voxels at the same places, so a result matches the volume Slicer loads index for index."""
    axes = volume.ijk_to_ras[:3, :3]
    if np.dot(np.cross(axes[:, 0], axes[:, 1]), axes[:, 2]) >= 0:
        return volume
    matrix = volume.ijk_to_ras.copy()
    matrix[:3, 3] += (volume.shape[2] - 1) * axes[:, 2]
    matrix[:3, 2] = -axes[:, 2]
    return Volume(np.ascontiguousarray(volume.array[:, :, ::-1]), matrix)


def write_dicom_seg(path: str, labelmap: Volume, labels: dict, colors: dict, source_files, algorithm: str,
                    version: str) -> None:
    """A DICOM SEG at ``path`` (written as it is: ``volume.write_whole`` makes it whole or absent) of a labelmap on
    its source series' grid, one segment per label (an [i, j, k, C] result: one per mask, overlaps kept)."""
    import highdicom
    import pydicom
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(source, stop_before_pixels=True) for source in source_files]
    values = sorted(labels)
    frames = np.stack([_frame_of(labelmap, source) for source in sources])
    if labelmap.array.ndim == 3:  # label values become segment numbers 1..N
        numbers = np.zeros(int(max(values, default=0)) + 1, dtype=np.uint16)
        numbers[values] = np.arange(1, len(values) + 1)
        known = (frames >= 0) & (frames < len(numbers))  # a value no label names is background
        frames = np.where(known, numbers[np.where(known, frames, 0)], 0)
    identification = highdicom.AlgorithmIdentificationSequence(
        name=algorithm, family=codes.cid7162.ArtificialIntelligence, version=version or "unknown")
    descriptions = [highdicom.seg.SegmentDescription(
        segment_number=number, segment_label=str(labels[value]), segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue, algorithm_type="AUTOMATIC",
        algorithm_identification=identification,
        display_color=highdicom.color.CIELabColor.from_rgb(*(255 * np.asarray(label_color(value, colors)[:3]))))
        for number, value in enumerate(values, start=1)]
    segmentation = highdicom.seg.Segmentation(
        source_images=sources, pixel_array=frames.astype(np.uint16), segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=highdicom.UID(), series_number=9000,
        sop_instance_uid=highdicom.UID(), instance_number=1, manufacturer="MonaiDeployer",
        manufacturer_model_name=algorithm, software_versions=version or "unknown", device_serial_number="none",
        series_description=f"{algorithm} segmentation")
    segmentation.save_as(path)


def _frame_of(labelmap: Volume, source) -> np.ndarray:
    """The labelmap's slice under one source image (rows j, columns i), checked to lie on that image's pixels."""
    ras_to_ijk = np.linalg.inv(labelmap.ijk_to_ras)
    row_direction, column_direction = (np.asarray(source.ImageOrientationPatient[:3], float),
                                       np.asarray(source.ImageOrientationPatient[3:], float))
    row_spacing, column_spacing = (float(value) for value in source.PixelSpacing)
    origin = np.asarray(source.ImagePositionPatient, float)
    corners_lps = [origin, origin + column_spacing * row_direction, origin + row_spacing * column_direction]
    corners = [ras_to_ijk @ np.append(LPS_TO_RAS @ corner, 1.0) for corner in corners_lps]
    slice_index = round(corners[0][2])
    expected = [np.array([0, 0, slice_index]), np.array([1, 0, slice_index]), np.array([0, 1, slice_index])]
    on_grid = all(np.allclose(corner[:3], where, atol=GRID_TOLERANCE_VOXELS) for corner, where in zip(
        corners, expected, strict=True))
    if not on_grid or not 0 <= slice_index < labelmap.shape[2] or (source.Columns, source.Rows) != labelmap.shape[:2]:
        raise OutputError("the labelmap does not lie on the grid of its DICOM series: a DICOM SEG cannot reference it")
    return np.swapaxes(labelmap.array[:, :, slice_index], 0, 1)
