"""DICOM series written from a volume keep its exact geometry and values, read back with pydicom."""

from __future__ import annotations

import numpy as np
import pytest

from MonaiDeployerLib import InputError, Volume
from MonaiDeployerLib.imageio.dicom import is_dicom_seg, write_dicom_series
from MonaiDeployerLib.imageio.volume import LPS_TO_RAS
from MonaiDeployerLib.testing import sampledata


def read_series_geometry(paths: list) -> tuple:
    """(array [i, j, k], IJK-to-RAS) rebuilt from the files' own DICOM attributes, slices in file order."""
    import pydicom

    images = [pydicom.dcmread(path) for path in paths]
    first = images[0]
    row, column = np.array(first.ImageOrientationPatient[:3], float), np.array(first.ImageOrientationPatient[3:], float)
    row_spacing, column_spacing = (float(value) for value in first.PixelSpacing)
    positions = np.array([image.ImagePositionPatient for image in images], float)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row * column_spacing, column * row_spacing
    lps[:3, 2] = positions[1] - positions[0]
    lps[:3, 3] = positions[0]
    ras = np.eye(4)
    ras[:3, :] = LPS_TO_RAS @ lps[:3, :]
    slices = [image.pixel_array.T * float(image.RescaleSlope) + float(image.RescaleIntercept) for image in images]
    return np.stack(slices, axis=-1), ras


@pytest.mark.parametrize("case", sampledata.held_out_cases(), ids=lambda case: case["name"])
def test_a_series_keeps_the_volumes_geometry_and_values(tmp_path, case):
    image, _ = sampledata.render_phantom(case["shape"], case["ijk_to_ras"], case["seed"])
    paths = write_dicom_series(Volume(image, case["ijk_to_ras"]), str(tmp_path))
    assert len(paths) == case["shape"][2]
    array, ras = read_series_geometry(paths)
    assert np.allclose(ras, case["ijk_to_ras"], atol=1e-5)
    assert np.abs(array - image).max() <= (image.max() - image.min()) / 65000  # one stored step at most
    assert not is_dicom_seg(paths[0])


def test_integer_volumes_are_stored_exactly(tmp_path):
    values = np.random.default_rng(3).integers(-1024, 3000, size=(6, 5, 4)).astype(np.int16)
    array, _ = read_series_geometry(write_dicom_series(Volume(values, np.diag([0.7, 0.8, 2.0, 1.0])), str(tmp_path)))
    assert np.array_equal(array, values)


def test_a_series_holds_one_channel(tmp_path):
    with pytest.raises(InputError, match="a DICOM series holds one channel"):
        write_dicom_series(Volume(np.zeros((4, 4, 4, 2), np.float32)), str(tmp_path))
