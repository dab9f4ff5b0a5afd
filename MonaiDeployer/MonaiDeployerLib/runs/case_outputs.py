"""Where results go: a batch case's to ``FOLDER/<its output stem><suffix>``, a Deploy app's further outputs beside it
(``name-2.nii.gz``...). With the suffix ".dcm", a DICOM series' result is a DICOM SEG that references the series.

Every file appears whole or not at all (``volume.write_whole``).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import OutputError
from ..imageio.dicom_cases import write_dicom_seg
from ..imageio.volume import SUFFIXES, check_output, check_writable, file_suffix, write_volume, write_whole

DICOM_SEG_SUFFIX = ".dcm"
OUTPUT_SUFFIXES = (*SUFFIXES, DICOM_SEG_SUFFIX)


class CaseOutputs:
    """The output files of a batch's cases in ``folder`` (made when missing), each named ``stem + suffix``."""

    def __init__(self, folder: str, suffix: str = ".seg.nrrd"):
        if suffix not in OUTPUT_SUFFIXES:
            raise OutputError(f"unsupported output suffix {suffix} (use {', '.join(OUTPUT_SUFFIXES)})")
        self.folder = os.path.abspath(folder)
        self.suffix = suffix

    def target(self, case) -> str:
        return os.path.join(self.folder, case.output_stem + self.suffix)

    def check(self, package, cases) -> None:
        """Fail before any case runs when the outputs cannot be written as asked."""
        if self.suffix == DICOM_SEG_SUFFIX:
            not_dicom = next((case for case in cases if not case.dicom_files), None)
            if not_dicom is not None:
                raise OutputError(f"a DICOM SEG references the DICOM series it was made from: {not_dicom.name} is "
                                  f"not a DICOM series (write {', '.join(SUFFIXES)} instead)")
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot make the output folder {self.folder}: {error.strerror}") from error
        probe = os.path.join(self.folder, "case" + self.suffix)
        if self.suffix == DICOM_SEG_SUFFIX:
            check_writable(probe)
        else:
            check_output(probe, overlapping_segments(package))

    def write(self, outcome, ledger: str | None = None) -> list:
        """Write a finished case's result (and any further outputs); returns the paths written."""
        target = self.target(outcome.case)
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot make the folder {os.path.dirname(target)}: {error.strerror}") from error
        result = outcome.result
        written = [self._write(target, result, outcome.case, ledger)]
        for index, other in enumerate(result.others, start=2):
            written.append(self._write(beside(target, index), other, outcome.case, ledger))
        return written

    def _write(self, path: str, result, case, ledger: str | None) -> str:
        if self.suffix != DICOM_SEG_SUFFIX:
            return write_volume(path, result.labelmap, result.labels, result.colors, ledger=ledger)
        package = result.package
        return write_whole(path, lambda partial: write_dicom_seg(
            partial, result.labelmap, result.labels, result.colors, case.dicom_files,
            package.name if package else "MonaiDeployer", package.version if package else ""), ledger)


def overlapping_segments(package) -> list | None:
    """The names of a package's segments when they may overlap (a plain .nrrd labelmap cannot hold them), else None."""
    return [package.labels[value] for value in sorted(package.labels)] if package.outputs_overlap else None


def beside(path: str, index: int) -> str:
    """``seg.nii.gz`` -> ``seg-2.nii.gz``: where a Deploy app's further outputs go."""
    suffix = file_suffix(path)
    return f"{path[:len(path) - len(suffix)]}-{index}{suffix}"


def voxel_counts(result) -> dict:
    """Voxels per label value; overlapping segments are counted each in its own mask."""
    array = result.labelmap.array
    if result.overlapping:
        return {value: int(np.count_nonzero(array[..., value - 1])) for value in sorted(result.labels)}
    return {value: int(np.count_nonzero(array == value)) for value in sorted(result.labels)}
