"""Scenarios shared by the module's Slicer self-test and the pytest suite (on a ``slicer-core`` scene).

Each scenario builds its input from an analytic phantom whose ground truth is placed in RAS, runs
the sample TorchScript package through ``NodeSegmentation`` and asserts on what a user would see.
"""

from __future__ import annotations

import os
import time

import numpy as np
import slicer

from ..errors import InputError
from ..imageio.volume import Volume
from ..packages import open_package
from ..scene import mrml
from ..scene.noderun import NodeSegmentation
from . import sampledata

MINIMUM_DICE = 0.95
SAMPLE_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "Resources",
                             "SampleModels")
SAMPLE_MODEL = os.path.join(SAMPLE_MODELS, "PhantomUNet.ts")
SAMPLE_BUNDLE = os.path.join(SAMPLE_MODELS, "PhantomBundle")


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    overlap = np.count_nonzero(prediction & truth)
    total = np.count_nonzero(prediction) + np.count_nonzero(truth)
    return 1.0 if total == 0 else 2.0 * overlap / total


def dice_per_label(labelmap: np.ndarray, truth: np.ndarray, labels) -> dict:
    return {value: dice(labelmap == value, truth == value) for value in labels}


def held_out_node(scene, case: dict):
    """A volume node with a held-out phantom, and the phantom's ground truth on the same grid."""
    image, truth = sampledata.render_phantom(case["shape"], case["ijk_to_ras"], case["seed"])
    node = mrml.volume_node_from_volume(scene, Volume(image, case["ijk_to_ras"]), case["name"])
    return node, truth


def node_array(node) -> np.ndarray:
    """A node's voxels indexed [i, j, k] (``arrayFromVolume`` is [k, j, i])."""
    return slicer.util.arrayFromVolume(node).transpose(2, 1, 0)


def scenario_held_out_labelmaps(scene, runner) -> dict:
    """Each held-out phantom (oblique, anisotropic, LPS) comes back on its exact grid, named, Dice >= 0.95."""
    package = open_package(SAMPLE_MODEL)
    scores = {}
    for case in sampledata.held_out_cases():
        input_node, truth = held_out_node(scene, case)
        before = node_array(input_node).copy()
        output = NodeSegmentation(runner, package, input_node).wait()
        assert output.IsA("vtkMRMLLabelMapVolumeNode"), output.GetClassName()
        assert np.allclose(mrml.ijk_to_ras(output), mrml.ijk_to_ras(input_node), atol=1e-9), case["name"]
        assert output.GetImageData().GetDimensions() == input_node.GetImageData().GetDimensions(), case["name"]
        assert np.array_equal(node_array(input_node), before), f"{case['name']}: the input node was changed"
        table = output.GetDisplayNode().GetColorNode()
        assert [table.GetColorName(value) for value in (1, 2)] == ["organ", "lesion"], case["name"]
        scores[case["name"]] = dice_per_label(node_array(output), truth, sampledata.LABELS)
        assert min(scores[case["name"]].values()) >= MINIMUM_DICE, (case["name"], scores[case["name"]])
    return scores


def scenario_segmentation_output(scene, runner) -> dict:
    """A segmentation node gets one segment per label, with the sidecar's names and colours."""
    return _segmentation_scores(scene, runner, open_package(SAMPLE_MODEL), sampledata.COLORS)


def scenario_bundle_segmentation(scene, runner) -> dict:
    """The sample MONAI Bundle (the same network as a bundle config) gives the same named segments."""
    return _segmentation_scores(scene, runner, open_package(SAMPLE_BUNDLE), None, trust=True)


def _segmentation_scores(scene, runner, package, colors: dict | None, trust: bool = False) -> dict:
    case = sampledata.held_out_cases()[0]
    input_node, truth = held_out_node(scene, case)
    before = node_array(input_node).copy()
    output = NodeSegmentation(runner, package, input_node, output_kind="segmentation", trust=trust).wait()
    segmentation = output.GetSegmentation()
    names = [segmentation.GetNthSegment(index).GetName() for index in range(segmentation.GetNumberOfSegments())]
    assert names == ["organ", "lesion"], names
    assert np.array_equal(node_array(input_node), before), "the input node was changed"
    scores = {}
    for value, name in sampledata.LABELS.items():
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        if colors is not None:
            color = segmentation.GetSegment(segment_id).GetColor()
            assert np.allclose(color, colors[value], atol=1e-3), (name, color)
        scores[name] = dice(mrml.segment_mask(output, segment_id, input_node), truth == value)
        assert scores[name] >= MINIMUM_DICE, (package.mode, name, scores[name])
    return scores


def scenario_bad_input_changes_nothing(scene, runner) -> str:
    """A single-slice volume is refused with a one-line reason and no node is added."""
    shape, ijk_to_ras = sampledata.training_grid()
    flat = mrml.volume_node_from_volume(scene, Volume(np.zeros((*shape[:2], 1), np.float32), ijk_to_ras), "flat")
    nodes_before = scene.GetNumberOfNodes()
    try:
        NodeSegmentation(runner, open_package(SAMPLE_MODEL), flat).wait()
    except InputError as error:
        message = str(error)
    else:
        raise AssertionError("a 2D input was accepted")
    assert "2D" in message and "\n" not in message, message
    assert scene.GetNumberOfNodes() == nodes_before
    return message


def scenario_cancel_leaves_nothing(scene, runner) -> float:
    """Cancel stops a run at once: no output node, no worker process; the next run works."""
    shape, ijk_to_ras = sampledata.benchmark_grid()  # large enough that the run is still going when cancelled
    input_node, _ = held_out_node(scene, {"name": "large", "shape": shape, "ijk_to_ras": ijk_to_ras, "seed": 7})
    package = open_package(SAMPLE_MODEL)
    nodes_before = scene.GetNumberOfNodes()
    run = NodeSegmentation(runner, package, input_node)
    while not any(event.stage == "inference" for event in run.poll(block_seconds=0.05)):
        assert not run.done, run.error
    started = time.monotonic()
    run.cancel()
    seconds = time.monotonic() - started
    assert run.error is not None and "cancelled" in str(run.error), run.error
    assert seconds < 2.0, seconds
    assert not runner.client.alive
    assert scene.GetNumberOfNodes() == nodes_before
    assert NodeSegmentation(runner, package, input_node).wait() is not None
    return seconds


SCENARIOS = (scenario_held_out_labelmaps, scenario_segmentation_output, scenario_bundle_segmentation,
             scenario_bad_input_changes_nothing, scenario_cancel_leaves_nothing)


def run_all(scene, runner, log=print) -> None:
    """Run every scenario; the first failure raises (AssertionError, or the run's MonaiDeployerError)."""
    for scenario in SCENARIOS:
        started = time.monotonic()
        outcome = scenario(scene, runner)
        log(f"{scenario.__name__}: {outcome} ({time.monotonic() - started:.1f} s)")
