"""Volume files keep the full IJK-to-RAS geometry, and Slicer's own readers agree with ours."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from MonaiDeployerLib import InputError, OutputError, Volume, read_volume, write_volume
from MonaiDeployerLib.imageio.volume import check_volume
from MonaiDeployerLib.scene import mrml


def oblique_volume(dtype=np.float32) -> Volume:
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ tilt @ np.diag([0.8, 1.3, 2.5])
    matrix[:3, 3] = [12.5, -40.0, 7.25]
    array = np.random.default_rng(3).normal(50, 30, size=(9, 7, 5)).astype(dtype)
    return Volume(array, matrix)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii", ".nii.gz"])
def test_round_trip_keeps_voxels_and_oblique_geometry(tmp_path, suffix):
    volume = oblique_volume()
    loaded = read_volume(write_volume(tmp_path / f"v{suffix}", volume))
    assert np.array_equal(loaded.array, volume.array)
    assert np.allclose(loaded.ijk_to_ras, volume.ijk_to_ras, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_slicer_reads_our_files_on_the_same_grid(tmp_path, suffix, scene):
    """Slicer's archetype reader (NRRD in LPS, NIfTI in RAS) puts every voxel where we said."""
    volume = oblique_volume()
    path = write_volume(tmp_path / f"v{suffix}", volume)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    assert np.allclose(mrml.ijk_to_ras(node), volume.ijk_to_ras, atol=1e-4)
    assert np.array_equal(mrml.volume_from_node(node).array, volume.array)


def test_seg_nrrd_opens_in_slicer_with_names_colours_and_voxels(tmp_path, scene):
    labels = (oblique_volume().array > 60).astype(np.uint8) + (oblique_volume().array > 90)
    volume = Volume(labels, oblique_volume().ijk_to_ras)
    path = write_volume(tmp_path / "s.seg.nrrd", volume, {1: "organ", 2: "lesion"}, {1: (1.0, 0.0, 0.0)})
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(2)] == ["organ", "lesion"]
    assert segmentation.GetNthSegment(0).GetColor() == (1.0, 0.0, 0.0)
    reference = mrml.volume_node_from_volume(scene, volume, "reference")
    lesion = mrml.segment_mask(node, segmentation.GetSegmentIdBySegmentName("lesion"), reference)
    assert np.array_equal(lesion, labels == 2)


@pytest.mark.parametrize(("array", "cause"), [
    (np.zeros((8, 8)), "the input is 2D"),
    (np.zeros((8, 8, 1)), "the input is 2D"),
    (np.zeros((8, 8, 8, 17)), "the input has 17 channels on its fourth axis"),
    (np.zeros((8, 8, 8, 2, 2)), "the input is 5D"),
    (np.where(np.arange(512).reshape(8, 8, 8) == 5, np.nan, 0.0), "1 NaN or infinite voxels"),
])
def test_unusable_volumes_are_refused_with_their_cause(array, cause):
    with pytest.raises(InputError, match=cause):
        check_volume(Volume(array))


def test_nifti_with_trailing_singleton_axis_is_3d(tmp_path):
    volume = oblique_volume()
    write_volume(tmp_path / "v.nii", Volume(volume.array[..., None], volume.ijk_to_ras))
    assert read_volume(tmp_path / "v.nii").shape == volume.shape


def test_missing_unreadable_and_unknown_inputs(tmp_path):
    with pytest.raises(InputError, match="input file not found"):
        read_volume(tmp_path / "nothing.nrrd")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(InputError, match=r"cannot read .*broken\.nii\.gz"):
        read_volume(tmp_path / "broken.nii.gz")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="unsupported input file type"):
        read_volume(tmp_path / "image.png")


def test_unwritable_output_leaves_nothing(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    unwritable = locked if not os.access(locked, os.W_OK) else Path("/proc")  # root writes anywhere but /proc
    try:
        with pytest.raises(OutputError, match="output is not writable"):
            write_volume(unwritable / "out.nrrd", oblique_volume())
    finally:
        locked.chmod(0o700)
    with pytest.raises(OutputError, match="output folder does not exist"):
        write_volume(tmp_path / "missing" / "out.nrrd", oblique_volume())
    with pytest.raises(OutputError, match="unsupported output file type"):
        write_volume(tmp_path / "out.png", oblique_volume())
    assert [p.name for p in tmp_path.iterdir()] == ["locked"]
    assert list(locked.iterdir()) == []


def test_a_failing_write_leaves_no_partial_file(tmp_path):
    """A labelmap that NIfTI cannot hold fails during the write: neither the target nor a partial file remains."""
    with pytest.raises(OutputError, match="cannot write"):
        write_volume(tmp_path / "out.nii.gz", Volume(np.zeros((4, 4, 4), dtype=object)))
    assert list(tmp_path.iterdir()) == []
