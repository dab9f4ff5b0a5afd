"""The Slicer side on Slicer's real MRML (slicer-core): the self-test's scenarios, and node placement."""

from __future__ import annotations

import numpy as np
import pytest

from MonaiDeployerLib import Volume
from MonaiDeployerLib.scene import mrml
from MonaiDeployerLib.scene.noderun import NodeSegmentation
from MonaiDeployerLib.testing import selftest


@pytest.mark.parametrize("scenario", selftest.SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_self_test_scenario(scenario, scene, runner, sample_model):
    """The very scenarios MonaiDeployerTest runs inside Slicer."""
    scenario(scene, runner)


def half_volume_node(scene, name="ct"):
    array = np.zeros((6, 5, 4), np.float32)
    array[3:] = 1.0
    matrix = np.array([[0, -1.2, 0, 10], [0.8, 0, 0, -5], [0, 0, 2.5, 30], [0, 0, 0, 1]], dtype=float)
    return mrml.volume_node_from_volume(scene, Volume(array, matrix), name), array


def test_labelmap_lands_beside_the_input_under_its_transform(scene, runner, tiny_models):
    folder_hierarchy = scene.GetSubjectHierarchyNode()
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    input_node, array = half_volume_node(scene)
    input_node.SetAndObserveTransformNodeID(transform.GetID())
    study = folder_hierarchy.CreateFolderItem(folder_hierarchy.GetSceneItemID(), "study")
    folder_hierarchy.CreateItem(study, input_node)  # what Slicer's subject hierarchy logic does on load

    output = NodeSegmentation(runner, tiny_models["identity"], input_node, name="result").wait()
    assert output.GetName() == "result"
    assert output.GetTransformNodeID() == transform.GetID()
    assert folder_hierarchy.GetItemParent(folder_hierarchy.GetItemByDataNode(output)) == study
    assert np.array_equal(selftest.node_array(output), (array > 0.5).astype(np.uint8))
    assert output.GetDisplayNode().GetColorNode().GetColorName(1) == "label_1"


def test_rerun_into_an_existing_labelmap_replaces_its_voxels_and_colour_table(scene, runner, tiny_models):
    input_node, array = half_volume_node(scene)
    output = NodeSegmentation(runner, tiny_models["identity"], input_node).wait()
    tables = scene.GetNodesByClass("vtkMRMLColorTableNode").GetNumberOfItems()
    again = NodeSegmentation(runner, tiny_models["two_classes"], input_node, output_node=output).wait()
    assert again is output
    assert scene.GetNodesByClass("vtkMRMLColorTableNode").GetNumberOfItems() == tables
    assert np.array_equal(selftest.node_array(output), (array > 0.5).astype(np.uint8))


def test_rerun_into_a_segmentation_replaces_same_named_segments_and_keeps_others(scene, runner, tiny_models):
    input_node, array = half_volume_node(scene)
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "edits")
    mrml.segmentations_logic(scene)  # as in the application, converter rules are registered
    segmentation_node.GetSegmentation().AddEmptySegment("", "my annotation", (1.0, 1.0, 0.0))
    for _ in range(2):
        NodeSegmentation(runner, tiny_models["identity"], input_node, output_node=segmentation_node).wait()
    segmentation = segmentation_node.GetSegmentation()
    names = sorted(segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments()))
    assert names == ["label_1", "my annotation"]
    mask = mrml.segment_mask(segmentation_node, segmentation.GetSegmentIdBySegmentName("label_1"), input_node)
    assert np.array_equal(mask, array > 0.5)
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


def test_a_failed_run_leaves_the_scene_as_it_was(scene, runner, tiny_models):
    input_node, _ = half_volume_node(scene)
    nodes = scene.GetNumberOfNodes()
    job = NodeSegmentation(runner, tiny_models["two_input_channels"], input_node)
    with pytest.raises(Exception, match="takes 2 input channels"):
        job.wait()
    assert scene.GetNumberOfNodes() == nodes


def test_a_vector_volume_is_read_as_channels(scene):
    import slicer

    array = np.arange(4 * 5 * 6 * 3, dtype=np.uint8).reshape(4, 5, 6, 3)  # [k, j, i, component]
    node = slicer.util.addVolumeFromArray(array, nodeClassName="vtkMRMLVectorVolumeNode")
    volume = mrml.volume_from_node(node)
    assert volume.shape == (6, 5, 4, 3)
    assert np.array_equal(volume.array, array.transpose(2, 1, 0, 3))
