"""Several input channels and overlapping segments, from files and nodes through the real worker and back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from MonaiDeployerLib import InputError, OutputError, Result, Volume, open_package, read_volume, write_volume
from MonaiDeployerLib.imageio.volume import check_volume, stack_channels
from MonaiDeployerLib.scene import mrml
from MonaiDeployerLib.scene.noderun import NodeSegmentation

NAMES = {1: "core", 2: "whole", 3: "enhancing"}
COLORS = {1: (1.0, 0.0, 0.0), 2: (0.0, 1.0, 0.0), 3: (0.0, 0.0, 1.0)}
SHAPE = (8, 7, 6)


def oblique_matrix() -> np.ndarray:
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, np.cos(0.4), -np.sin(0.4)], [0, np.sin(0.4), np.cos(0.4)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ tilt @ np.diag([0.7, 1.1, 2.5])
    matrix[:3, 3] = [-20.5, 14.0, 3.75]
    return matrix


def overlapping_masks() -> np.ndarray:
    """Three masks on SHAPE: core inside whole, enhancing crossing both, and voxels in none."""
    i, j, k = np.indices(SHAPE)
    core = (i >= 2) & (i < 5) & (j >= 2) & (j < 5)
    whole = (i >= 1) & (i < 7) & (j >= 1) & (j < 6)
    enhancing = (k >= 3) & (i >= 4)
    return np.stack([core, whole, enhancing], axis=-1).astype(np.uint8)


def mask_volume() -> Volume:
    return Volume(overlapping_masks(), oblique_matrix())


def reference_node(scene, name="t1"):
    image = np.random.default_rng(1).normal(100, 20, SHAPE).astype(np.float32)
    return mrml.volume_node_from_volume(scene, Volume(image, oblique_matrix()), name), image


# Files


@pytest.mark.parametrize(("suffix", "channels"), [
    (".nrrd", False), (".nii.gz", False), (".seg.nrrd", False),
    (".nii", True), (".nii.gz", True), (".seg.nrrd", True),
])
def test_round_trip_keeps_labels_or_channels_and_oblique_geometry(tmp_path, suffix, channels):
    masks = overlapping_masks()
    array = masks if channels else (masks[..., 1] + masks[..., 0]).astype(np.uint8)
    path = write_volume(tmp_path / f"result{suffix}", Volume(array, oblique_matrix()), NAMES, COLORS)
    loaded = read_volume(path)
    assert loaded.shape == array.shape
    assert np.array_equal(loaded.array, array)
    assert np.allclose(loaded.ijk_to_ras, oblique_matrix(), atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [f"result{suffix}"]


def test_multi_layer_seg_nrrd_header_is_slicers_layout(tmp_path):
    write_volume(tmp_path / "r.seg.nrrd", mask_volume(), NAMES, COLORS)
    header = (tmp_path / "r.seg.nrrd").read_bytes().split(b"\n\n")[0].decode("latin-1")
    assert "sizes: 3 8 7 6" in header
    assert "kinds: list domain domain domain" in header
    assert "space directions: none (" in header
    for index in range(3):
        assert f"Segment{index}_Layer:={index}\n" in header
        assert f"Segment{index}_LabelValue:=1\n" in header
        assert f"Segment{index}_Name:={NAMES[index + 1]}\n" in header


def test_slicer_reads_the_multi_layer_seg_nrrd_with_every_overlap(tmp_path, scene):
    masks = overlapping_masks()
    path = write_volume(tmp_path / "r.seg.nrrd", mask_volume(), NAMES, COLORS)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == [
        "core", "whole", "enhancing"]
    assert segmentation.GetNumberOfLayers() == 3
    assert [segmentation.GetNthSegment(i).GetColor() for i in range(3)] == [COLORS[1], COLORS[2], COLORS[3]]
    reference, _ = reference_node(scene)
    for channel, name in enumerate(NAMES.values()):
        mask = mrml.segment_mask(node, segmentation.GetSegmentIdBySegmentName(name), reference)
        assert np.array_equal(mask, masks[..., channel] > 0), name
    both = mrml.segment_mask(node, segmentation.GetSegmentIdBySegmentName("core"), reference) & mrml.segment_mask(
        node, segmentation.GetSegmentIdBySegmentName("enhancing"), reference)
    assert np.array_equal(both, masks[..., 0] & masks[..., 2]) and np.count_nonzero(both) == 9


def test_overlapping_result_into_a_plain_nrrd_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(OutputError, match=r"the 3 segments \(core, whole, enhancing\) may overlap, .* write "
                                          r"\.seg\.nrrd \(one layer per segment\) or \.nii\.gz instead") as refused:
        write_volume(tmp_path / "r.nrrd", mask_volume(), NAMES, COLORS)
    assert "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_slicer_vector_volume_nrrd_reads_with_channels_last(tmp_path, scene):
    import slicer

    image = np.random.default_rng(2).normal(100, 20, (*SHAPE, 4)).astype(np.float32)
    node = slicer.util.addVolumeFromArray(image.transpose(2, 1, 0, 3), mrml.array_to_matrix(oblique_matrix()),
                                          nodeClassName="vtkMRMLVectorVolumeNode")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(tmp_path / "mr.nrrd"))
    assert storage.WriteData(node)
    loaded = read_volume(tmp_path / "mr.nrrd")
    assert np.array_equal(loaded.array, image)
    assert np.allclose(loaded.ijk_to_ras, oblique_matrix(), atol=1e-5)


# Checks and stacking


@pytest.mark.parametrize("channels", [2, 4, 16])
def test_channel_last_volumes_are_accepted(channels):
    check_volume(Volume(np.zeros((*SHAPE, channels), np.float32)))


@pytest.mark.parametrize(("shape", "cause"), [
    ((8, 7, 6, 1), "the input has 1 channels on its fourth axis (shape 8x7x6x1); 2 to 16 channels are supported"),
    ((8, 7, 6, 17), "the input has 17 channels on its fourth axis (shape 8x7x6x17); 2 to 16 channels are supported"),
    ((8, 7, 6, 2, 2), "the input is 5D (shape 8x7x6x2x2); a 3D volume is needed, with 2 to 16 channels on a fourth "
                      "axis at most"),
    ((8, 1, 6, 3), "the input is 2D (shape 8x1x6x3); a 3D volume is needed"),
])
def test_unusable_channel_volumes_are_refused_in_one_line(shape, cause):
    with pytest.raises(InputError) as refused:
        check_volume(Volume(np.zeros(shape, np.float32)))
    assert str(refused.value) == cause


def test_stack_channels_keeps_the_order_and_the_grid():
    volumes = [Volume(np.full(SHAPE, value, np.float32), oblique_matrix()) for value in (3.0, 1.0, 2.0)]
    stacked = stack_channels(volumes)
    assert stacked.shape == (*SHAPE, 3)
    assert stacked.array[0, 0, 0].tolist() == [3.0, 1.0, 2.0]
    assert np.array_equal(stacked.ijk_to_ras, oblique_matrix())
    assert stack_channels(volumes[:1]) is volumes[0]


def test_stack_channels_names_the_input_that_is_not_on_the_first_grid():
    first = Volume(np.zeros(SHAPE), oblique_matrix())
    shifted_matrix = oblique_matrix()
    shifted_matrix[0, 3] += 1.0
    with pytest.raises(InputError) as refused:
        stack_channels([first, Volume(np.zeros(SHAPE), oblique_matrix()), Volume(np.zeros((8, 7, 5)))])
    assert str(refused.value) == ("input 3 is not on the grid of input 1 (shape 8x7x5 against 8x7x6); "
                                  "resample it onto input 1 first")
    with pytest.raises(InputError) as refused:
        stack_channels([first, Volume(np.zeros(SHAPE), shifted_matrix)], ["t1.nii.gz", "t2.nrrd"])
    assert str(refused.value) == ("t2.nrrd is not on the grid of t1.nii.gz (same shape, different position, "
                                  "spacing or axes); resample it onto t1.nii.gz first")
    with pytest.raises(InputError, match="input 2 has shape 8x7x6x2; each of several inputs must be one 3D image"):
        stack_channels([first, Volume(np.zeros((*SHAPE, 2)), oblique_matrix())])
    with pytest.raises(InputError, match="no input volume given"):
        stack_channels([])


# MRML


def test_vector_volume_node_and_several_scalar_nodes_become_channels(scene):
    import slicer

    t1, t1_image = reference_node(scene, "t1")
    t2, t2_image = reference_node(scene, "t2")
    stacked = mrml.volume_from_nodes([t1, t2])
    assert np.array_equal(stacked.array, np.stack([t1_image, t2_image], axis=-1))
    assert np.allclose(stacked.ijk_to_ras, oblique_matrix())
    vector = slicer.util.addVolumeFromArray(stacked.array.transpose(2, 1, 0, 3),
                                            mrml.array_to_matrix(oblique_matrix()),
                                            nodeClassName="vtkMRMLVectorVolumeNode")
    from_vector = mrml.volume_from_node(vector)
    assert np.array_equal(from_vector.array, stacked.array)
    assert np.allclose(from_vector.ijk_to_ras, oblique_matrix())


def test_nodes_on_another_grid_or_transform_are_refused_by_name(scene):
    t1, _ = reference_node(scene, "t1")
    coarse = mrml.volume_node_from_volume(scene, Volume(np.zeros((4, 7, 6), np.float32), oblique_matrix()), "flair")
    with pytest.raises(InputError, match=r"^'flair' is not on the grid of 't1' \(shape 4x7x6 against 8x7x6\); "
                                         r"resample it onto 't1' first$"):
        mrml.volume_from_nodes([t1, coarse])
    moved, _ = reference_node(scene, "t2")
    moved.SetAndObserveTransformNodeID(scene.AddNewNodeByClass("vtkMRMLLinearTransformNode").GetID())
    with pytest.raises(InputError, match="'t2' is under another transform than 't1'"):
        mrml.volume_from_nodes([t1, moved])


def overlapping_result() -> Result:
    return Result(mask_volume(), dict(NAMES), dict(COLORS))


def segment_names(node) -> list:
    segmentation = node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def under_a_translation(scene, node):
    """Put ``node`` under a parent transform that moves it, as a registered image is."""
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(mrml.array_to_matrix(np.array(
        [[1, 0, 0, 7.5], [0, 1, 0, -3.0], [0, 0, 1, 2.0], [0, 0, 0, 1]], dtype=float)))
    node.SetAndObserveTransformNodeID(transform.GetID())
    return transform


def test_overlapping_result_becomes_one_segment_per_channel(scene):
    reference, image = reference_node(scene)
    transform = under_a_translation(scene, reference)
    masks = overlapping_masks()
    result = overlapping_result()
    assert result.overlapping
    node = mrml.result_to_segmentation_node(result, reference, name="tumour")
    assert node.GetName() == "tumour" and node.GetTransformNodeID() == transform.GetID()
    assert segment_names(node) == ["core", "whole", "enhancing"]
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetColor() for i in range(3)] == [COLORS[1], COLORS[2], COLORS[3]]
    for channel, name in enumerate(NAMES.values()):
        mask = mrml.segment_mask(node, segmentation.GetSegmentIdBySegmentName(name), reference)
        assert np.array_equal(mask, masks[..., channel] > 0), name
    assert np.array_equal(mrml.volume_from_node(reference).array, image)
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


def test_rerun_replaces_same_named_segments_keeps_others_and_makes_empty_ones(scene):
    reference, _ = reference_node(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "edits")
    mrml.segmentations_logic(scene)
    node.GetSegmentation().AddEmptySegment("", "my annotation", (1.0, 1.0, 0.0))
    mrml.result_to_segmentation_node(overlapping_result(), reference, node)
    masks = overlapping_masks()
    masks[..., 2] = 0  # enhancing is empty this time
    again = mrml.result_to_segmentation_node(Result(Volume(masks, oblique_matrix()), dict(NAMES)), reference, node)
    assert again is node
    assert sorted(segment_names(node)) == ["core", "enhancing", "my annotation", "whole"]
    segmentation = node.GetSegmentation()
    enhancing = mrml.segment_mask(node, segmentation.GetSegmentIdBySegmentName("enhancing"), reference)
    assert not enhancing.any()
    whole = mrml.segment_mask(node, segmentation.GetSegmentIdBySegmentName("whole"), reference)
    assert np.array_equal(whole, masks[..., 1] > 0)


def test_labelmaps_under_a_parent_transform_land_on_the_input_too(scene):
    """Exclusive labels into a segmentation under the input's transform: no voxel is moved by the import."""
    reference, _ = reference_node(scene)
    under_a_translation(scene, reference)
    labelmap = overlapping_masks()[..., 1] + overlapping_masks()[..., 0]
    node = mrml.result_to_segmentation_node(Result(Volume(labelmap, oblique_matrix()), {1: "rim", 2: "centre"}),
                                            reference)
    segmentation = node.GetSegmentation()
    for value, name in ((1, "rim"), (2, "centre")):
        mask = mrml.segment_mask(node, segmentation.GetSegmentIdBySegmentName(name), reference)
        assert np.array_equal(mask, labelmap == value), name


def test_overlapping_result_into_a_labelmap_is_refused_and_the_scene_is_unchanged(scene):
    reference, image = reference_node(scene)
    existing = mrml.volume_node_from_volume(scene, Volume(np.ones(SHAPE, np.uint8), oblique_matrix()), "old",
                                            labelmap=True)
    nodes = [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]
    for target in (None, existing):
        with pytest.raises(OutputError) as refused:
            mrml.result_to_labelmap_node(overlapping_result(), reference, target)
        assert str(refused.value) == ("the model's segments overlap (core, whole, enhancing) and a labelmap holds one "
                                      "label per voxel; choose a segmentation output so that none is lost")
        assert [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())] == nodes
    assert np.array_equal(mrml.volume_from_node(existing).array, np.ones(SHAPE, np.uint8))
    assert np.array_equal(mrml.volume_from_node(reference).array, image)


# End to end through the worker, with a real MONAI bundle


def ramp_inputs() -> tuple:
    """Two channels: x0 rises along i, x1 along j; none lies near the model's thresholds (0.3 and 0.6)."""
    i, j, _ = np.indices(SHAPE).astype(np.float32)
    return i / (SHAPE[0] - 1), j / (SHAPE[1] - 1)


def expected_masks() -> np.ndarray:
    """low = x0 > 0.3 (i >= 3), high = x1 > 0.6 (j >= 4): they overlap where both hold."""
    i, j, _ = np.indices(SHAPE)
    return np.stack([i >= 3, j >= 4], axis=-1).astype(np.uint8)


def write_two_mask_bundle(folder) -> str:
    """A MONAI Bundle whose network turns 2 input channels into 2 independent sigmoid masks."""
    import torch

    class TwoMasks(torch.nn.Module):
        def forward(self, x):
            return torch.cat([10 * (x[:, 0:1] - 0.3), 10 * (x[:, 1:2] - 0.6)], dim=1)

    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    torch.jit.script(TwoMasks()).save(str(folder / "models" / "model.ts"))
    metadata = {
        "name": "Two overlapping masks", "version": "0.1.0",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 2, "channel_def": {"0": "x0", "1": "x1"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                                 "channel_def": {"0": "low", "1": "high"}}},
        },
    }
    inference = {
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureTyped", "keys": "image"},
        ]},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
            {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": str(folder / "eval"), "resample": False},
        ]},
    }
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (folder / "configs" / "inference.json").write_text(json.dumps(inference))
    return str(folder)


def test_two_channels_through_the_worker_give_exact_overlapping_masks(tmp_path, runner):
    bundle = write_two_mask_bundle(tmp_path / "bundle")
    x0, x1 = ramp_inputs()
    package = open_package(bundle)
    assert package.labels == {1: "low", 2: "high"} and package.requirements == {}
    result = runner.run(package, stack_channels([Volume(x0, oblique_matrix()), Volume(x1, oblique_matrix())]),
                        trust=True)
    assert result.overlapping
    assert result.labels == {1: "low", 2: "high"}
    assert result.labelmap.shape == (*SHAPE, 2)
    assert np.array_equal(result.labelmap.array, expected_masks())
    assert np.array_equal(result.labelmap.ijk_to_ras, oblique_matrix())
    assert np.count_nonzero(result.labelmap.array.all(axis=-1)) == 5 * 3 * 6
    assert not (tmp_path / "bundle" / "eval").exists()  # SaveImaged is left out


def test_two_nodes_or_one_vector_node_into_a_segmentation_and_not_into_a_labelmap(tmp_path, scene, runner):
    import slicer

    package = open_package(write_two_mask_bundle(tmp_path / "bundle"))
    x0, x1 = ramp_inputs()
    first = mrml.volume_node_from_volume(scene, Volume(x0, oblique_matrix()), "x0")
    second = mrml.volume_node_from_volume(scene, Volume(x1, oblique_matrix()), "x1")
    vector = slicer.util.addVolumeFromArray(np.stack([x0, x1], axis=-1).transpose(2, 1, 0, 3),
                                            mrml.array_to_matrix(oblique_matrix()),
                                            nodeClassName="vtkMRMLVectorVolumeNode")
    for inputs, reference in (([first, second], first), (vector, vector)):
        output = NodeSegmentation(runner, package, inputs, output_kind="segmentation", trust=True).wait()
        assert segment_names(output) == ["low", "high"]
        segmentation = output.GetSegmentation()
        for channel, name in enumerate(("low", "high")):
            mask = mrml.segment_mask(output, segmentation.GetSegmentIdBySegmentName(name), reference)
            assert np.array_equal(mask, expected_masks()[..., channel] > 0), name
    assert np.array_equal(mrml.volume_from_node(first).array, x0)

    nodes = scene.GetNumberOfNodes()
    job = NodeSegmentation(runner, package, [first, second], output_kind="labelmap", trust=True)
    with pytest.raises(OutputError, match=r"the model's segments overlap \(low, high\) .* choose a segmentation"):
        job.wait()
    assert scene.GetNumberOfNodes() == nodes


def cli(*arguments) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "MonaiDeployer")}
    return subprocess.run([sys.executable, "-m", "MonaiDeployerLib", *map(str, arguments)],
                          capture_output=True, text=True, env=environment, timeout=300, check=False)


def test_command_line_with_two_inputs_writes_a_layered_seg_nrrd(tmp_path):
    bundle = write_two_mask_bundle(tmp_path / "bundle")
    x0, x1 = ramp_inputs()
    first = write_volume(tmp_path / "x0.nii.gz", Volume(x0, oblique_matrix()))
    second = write_volume(tmp_path / "x1.nrrd", Volume(x1, oblique_matrix()))
    target = tmp_path / "masks.seg.nrrd"
    finished = cli("run", bundle, first, second, target, "--device", "cpu", "--trust", "--json")
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["labels"] == {"1": "low", "2": "high"}
    assert report["overlapping"] is True
    assert report["voxels"] == {"1": 5 * 7 * 6, "2": 8 * 3 * 6}
    written = read_volume(target)
    assert np.array_equal(written.array, expected_masks())
    assert np.allclose(written.ijk_to_ras, oblique_matrix(), atol=1e-5)

    stacked = write_volume(tmp_path / "x.nii.gz", Volume(np.stack([x0, x1], axis=-1), oblique_matrix()))
    finished = cli("run", bundle, stacked, tmp_path / "masks.nii.gz", "--device", "cpu", "--trust")
    assert finished.returncode == 0, finished.stderr
    assert "(the segments overlap: a voxel may count in several)" in finished.stdout
    assert "  1 low: 210 voxels\n  2 high: 144 voxels\n" in finished.stdout
    assert np.array_equal(read_volume(tmp_path / "masks.nii.gz").array, expected_masks())


def test_command_line_refuses_inputs_on_different_grids_and_overlaps_in_a_plain_nrrd(tmp_path):
    bundle = write_two_mask_bundle(tmp_path / "bundle")
    x0, x1 = ramp_inputs()
    first = write_volume(tmp_path / "x0.nii.gz", Volume(x0, oblique_matrix()))
    second = write_volume(tmp_path / "x1.nii.gz", Volume(x1))
    before = sorted(os.listdir(tmp_path))
    finished = cli("run", bundle, first, second, tmp_path / "masks.seg.nrrd", "--trust")
    assert finished.returncode == 1
    assert finished.stderr == (f"error: {second} is not on the grid of {first} (same shape, different position, "
                               f"spacing or axes); resample it onto {first} first\n")

    second = write_volume(tmp_path / "x1.nii.gz", Volume(x1, oblique_matrix()))
    finished = cli("run", bundle, first, second, tmp_path / "masks.nrrd", "--device", "cpu", "--trust")
    assert finished.returncode == 1
    assert finished.stderr.startswith(f"error: cannot write {tmp_path / 'masks.nrrd'}: the 2 segments (low, high) "
                                      "may overlap"), finished.stderr
    assert finished.stderr.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == before
