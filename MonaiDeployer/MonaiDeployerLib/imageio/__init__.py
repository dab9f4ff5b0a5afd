"""Volumes in and out: NRRD, NIfTI and ``.seg.nrrd`` files, DICOM series and DICOM SEG."""
