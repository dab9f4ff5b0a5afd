"""DICOM for apps that read and write it: a CT series from a volume, and a DICOM SEG back onto its grid.

The series keeps the volume's exact geometry: DICOM's patient space is LPS, so the RAS matrix is
flipped; ``ImageOrientationPatient`` holds the unit i (row) and j (column) directions,
``PixelSpacing`` is [row spacing, column spacing] = [spacing along j, along i], and slice k sits
at ``ImagePositionPatient`` = origin + k * (k axis). A SEG is read with highdicom and placed by
its affine, never by index: readers may stack slices in another order.
"""

from __future__ import annotations

import datetime
import os

import numpy as np

from ..errors import InputError, PackageError
from .volume import LPS_TO_RAS, Volume

STORED_RANGE = 65000  # unsigned 16-bit values, with room to spare
DICOM_SOURCE_FOLDER = "dicom-source"  # in a run's folder: the series the input volume was loaded from


def write_dicom_series(volume: Volume, folder: str) -> list:
    """One CT image file per slice k (``slice_0001.dcm``...); returns their paths."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
    from pydicom.valuerep import format_number_as_ds

    if volume.array.ndim != 3:
        raise InputError("a DICOM series holds one channel; this input has several")
    lps = LPS_TO_RAS @ volume.ijk_to_ras[:3, :]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    orientation = np.concatenate([lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]])
    stored, slope, intercept = _to_stored(volume.array)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    today = datetime.date.today().strftime("%Y%m%d")

    def ds(value: float) -> str:
        return format_number_as_ds(float(value))

    paths = []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = os.path.join(folder, f"slice_{k + 1:04d}.dcm")
        image = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
        image.SOPClassUID, image.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        image.StudyInstanceUID, image.SeriesInstanceUID = study, series
        image.FrameOfReferenceUID = frame_of_reference
        image.Modality, image.SeriesNumber, image.InstanceNumber = "CT", 1, k + 1
        image.PatientName, image.PatientID = "Anonymous^MonaiDeployer", "MONAIDEPLOYER"
        image.PatientBirthDate, image.PatientSex, image.ReferringPhysicianName = "", "", ""
        image.StudyDate = image.SeriesDate = today
        image.StudyTime = image.SeriesTime = "000000"
        image.StudyID, image.AccessionNumber = "1", ""
        image.StudyDescription = image.SeriesDescription = "MonaiDeployer input"
        image.Manufacturer = "MonaiDeployer"
        image.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        image.ImageOrientationPatient = [ds(value) for value in orientation]
        image.ImagePositionPatient = [ds(value) for value in lps[:, 3] + k * lps[:, 2]]
        image.PixelSpacing = [ds(spacing[1]), ds(spacing[0])]
        image.SliceThickness = ds(spacing[2])
        image.Rows, image.Columns = volume.shape[1], volume.shape[0]
        image.SamplesPerPixel, image.PhotometricInterpretation = 1, "MONOCHROME2"
        image.BitsAllocated, image.BitsStored, image.HighBit, image.PixelRepresentation = 16, 16, 15, 0
        image.RescaleSlope, image.RescaleIntercept, image.RescaleType = ds(slope), ds(intercept), "HU"
        image.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows are j, columns are i
        pydicom.dcmwrite(path, image, enforce_file_format=True)
        paths.append(path)
    return paths


def _to_stored(array: np.ndarray) -> tuple:
    """Unsigned 16-bit values with the slope and intercept that give the voxel values back."""
    low, high = float(array.min()), float(array.max())
    integral = np.issubdtype(array.dtype, np.integer) or bool(np.all(array == np.round(array)))
    slope = 1.0 if integral and high - low <= STORED_RANGE else max((high - low) / STORED_RANGE, 1e-6)
    intercept = np.floor(low) if slope == 1.0 else low
    stored = np.clip(np.round((array - intercept) / slope), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return stored, slope, intercept


def read_dicom_seg(path: str) -> tuple:
    """A DICOM SEG file as (labelmap ``Volume`` in RAS, {segment number: segment label})."""
    import highdicom

    try:
        segmentation = highdicom.seg.segread(path)
        labels = {number: segmentation.get_segment_description(number).segment_label
                  for number in segmentation.segment_numbers}
        seg_volume = segmentation.get_volume(combine_segments=True, skip_overlap_checks=True)
    except Exception as error:  # pydicom and highdicom raise many types for one cause: a file not usable
        raise PackageError(f"the DICOM SEG {os.path.basename(path)} cannot be read: "
                           f"{' '.join(str(error).split())}") from error
    return from_highdicom_volume(seg_volume), labels


def from_highdicom_volume(volume) -> Volume:
    """A ``highdicom.Volume`` (indexed slice, row, column = k, j, i; affine in LPS) as a library volume [i, j, k]."""
    array = np.transpose(np.asarray(volume.array), (2, 1, 0))
    affine = np.asarray(volume.affine, dtype=np.float64)[:, [2, 1, 0, 3]]
    matrix = np.eye(4)
    matrix[:3, :] = LPS_TO_RAS @ affine[:3, :]
    return Volume(array, matrix)


def is_dicom_seg(path: str) -> bool:
    """True for a DICOM file whose SOP class is Segmentation Storage (read without its pixels)."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # not DICOM at all
        return False
    return str(header.get("SOPClassUID", "")) == "1.2.840.10008.5.1.4.1.1.66.4"
