"""Apply, Cancel and the time-out driven as a user does, with the Qt event loop running for real."""

from __future__ import annotations

import time

import psutil
import pytest
import vtk
from PySide6 import QtCore
from slicer_harness.events import Heartbeat, perform, wait_until

from MonaiDeployerLib.testing import sampledata
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label, held_out_node, node_array

from .conftest import SAMPLE_MODEL
from .test_panel_binds import card_text, type_into

RUN_TIMEOUT = 600  # a run of the sample model takes seconds; this only bounds a hang


class Watcher:
    """Samples the stage line and the progress bar every 10 ms while a run goes on, as a user would see them."""

    def __init__(self, widget):
        self.stages, self.values = [], []
        self._widget = widget
        self._timer = QtCore.QTimer()
        self._timer.setInterval(10)
        self._timer.timeout.connect(self._sample)

    def _sample(self) -> None:
        stage, value = self._widget.ui.stageLabel.text, self._widget.ui.progressBar.value
        if not self.stages or self.stages[-1] != stage:
            self.stages.append(stage)
        if not self.values or self.values[-1] != value:
            self.values.append(value)

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.stop()
        self._sample()


def choose(panel, volume, package=SAMPLE_MODEL, output_kind="labelmap", card="Mode:"):
    """Pick the volume, type the package, pick the output kind; wait for the card to show ``card``."""
    parameters = panel.logic.getParameterNode()
    panel.ui.inputSelector.setCurrentNode(volume)
    type_into(panel.ui.packagePathLineEdit, str(package))
    panel.ui.outputKindComboBox.currentIndex = panel.ui.outputKindComboBox.findText(output_kind)
    assert parameters.outputKind == output_kind
    assert card in card_text(panel)
    return parameters


def apply_and_wait(panel, what="the run"):
    perform(panel.ui.applyButton.click)
    wait_until(lambda: not panel.isRunning(), RUN_TIMEOUT, what)


def scene_nodes() -> list:
    import slicer

    scene = slicer.mrmlScene
    return sorted(scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes()))


def worker_processes() -> list:
    """This process's children that run the library's worker."""
    return [child for child in psutil.Process().children(recursive=True)
            if any("MonaiDeployerLib" in part or "BOOT" in part for part in child.cmdline())]


def big_phantom(size: int = 176):
    """A phantom large enough that the sample model runs for a few seconds on this machine."""
    import slicer

    shape, ijk_to_ras = sampledata.benchmark_grid(size)
    image, _truth = sampledata.render_phantom(shape, ijk_to_ras, seed=5)
    return slicer.util.addVolumeFromArray(image.transpose(2, 1, 0).copy(), ijk_to_ras, "big phantom")


@pytest.mark.parametrize("output_kind", ["labelmap", "segmentation"])
def test_apply_puts_the_result_beside_the_input_and_over_it_in_the_views(panel, output_kind):
    import slicer

    case = sampledata.held_out_cases()[1]  # an oblique grid
    volume, truth = held_out_node(slicer.mrmlScene, case)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    study = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Patient 1 study")  # as a DICOM import makes
    hierarchy.CreateItem(study, volume)
    choose(panel, volume, output_kind=output_kind)
    with Watcher(panel) as watched, Heartbeat() as heartbeat:
        apply_and_wait(panel)
    print(f"longest GUI-thread block during the {output_kind} run: {heartbeat.longest * 1000:.0f} ms")
    assert panel.ui.stageLabel.text.startswith("Created "), panel.ui.logTextEdit.toPlainText()
    assert len(watched.stages) >= 3, watched.stages  # Started, the worker's stages, Created
    assert watched.values[-1] == 100 and len(watched.values) >= 2

    composites = slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")
    if output_kind == "labelmap":
        (output,) = slicer.util.getNodesByClass("vtkMRMLLabelMapVolumeNode")
        assert {node.GetLabelVolumeID() for node in composites} == {output.GetID()}
        scores = dice_per_label(node_array(output), truth, sampledata.LABELS)
        input_matrix, output_matrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(input_matrix)
        output.GetIJKToRASMatrix(output_matrix)
        assert all(abs(input_matrix.GetElement(r, c) - output_matrix.GetElement(r, c)) < 1e-9
                   for r in range(4) for c in range(4))
        assert min(scores.values()) >= MINIMUM_DICE, scores
    else:
        (output,) = slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
        segmentation = output.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        assert sorted(names) == sorted(sampledata.LABELS.values())
        display = output.GetDisplayNode()
        assert display is not None and display.GetVisibility()
    assert {node.GetBackgroundVolumeID() for node in composites} == {volume.GetID()}
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(output)) == study  # beside the input
    assert panel.ui.applyButton.enabled


def test_cancel_stops_the_run_within_two_seconds_and_leaves_the_scene_as_it_was(panel):
    volume = big_phantom()
    choose(panel, volume)
    before = scene_nodes()
    perform(panel.ui.applyButton.click)
    wait_until(lambda: panel.ui.stageLabel.text == "inference" and panel.ui.progressBar.value > 0, RUN_TIMEOUT,
               "the sliding window started")
    assert panel.isRunning() and panel.ui.cancelButton.enabled
    clicked = time.monotonic()
    perform(panel.ui.cancelButton.click)
    wait_until(lambda: not panel.isRunning(), 2, "the run stopped after Cancel")
    print(f"Cancel took {time.monotonic() - clicked:.2f} s")
    assert panel.ui.stageLabel.text == "Cancelled; the scene is unchanged."
    assert scene_nodes() == before
    wait_until(lambda: not worker_processes(), 5, "the worker process ended")
    assert panel.ui.applyButton.enabled


def test_the_time_out_stops_a_run(panel):
    volume = big_phantom()
    parameters = choose(panel, volume)
    before = scene_nodes()
    panel.ui.runTimeoutSpinBox.value = 1
    assert parameters.runTimeout == 1
    apply_and_wait(panel, "the timed-out run")
    assert "No result after 1 s (the time-out in Advanced): the run was stopped." in \
        panel.ui.logTextEdit.toPlainText()
    assert panel.ui.stageLabel.text == "Cancelled; the scene is unchanged."
    assert scene_nodes() == before
    panel.ui.runTimeoutSpinBox.value = 0


@pytest.mark.parametrize("node_class", ["vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"])
def test_an_existing_output_node_of_either_kind_can_be_chosen_and_is_updated(panel, node_class):
    """Defect 4: choosing an existing node of the other kind bounced back to the previous choice."""
    import slicer

    case = sampledata.held_out_cases()[0]
    volume, truth = held_out_node(slicer.mrmlScene, case)
    other_kind = "labelmap" if node_class == "vtkMRMLSegmentationNode" else "segmentation"
    parameters = choose(panel, volume, output_kind=other_kind)
    existing = slicer.mrmlScene.AddNewNodeByClass(node_class, "existing output")
    panel.ui.outputSelector.setCurrentNode(existing)
    assert panel.ui.outputSelector.currentNode() is existing
    assert parameters.outputNode is existing
    assert parameters.outputKind == ("segmentation" if node_class == "vtkMRMLSegmentationNode" else "labelmap")
    assert not panel.ui.outputKindComboBox.enabled
    count = slicer.mrmlScene.GetNumberOfNodesByClass(node_class)
    apply_and_wait(panel)
    assert panel.ui.stageLabel.text == "Updated existing output."
    assert slicer.mrmlScene.GetNumberOfNodesByClass(node_class) == count
    if node_class == "vtkMRMLLabelMapVolumeNode":
        assert min(dice_per_label(node_array(existing), truth, sampledata.LABELS).values()) >= MINIMUM_DICE
    else:
        assert existing.GetSegmentation().GetNumberOfSegments() == len(sampledata.LABELS)
    panel.ui.outputSelector.setCurrentNode(None)
    assert parameters.outputNode is None and panel.ui.outputKindComboBox.enabled


def test_the_panel_log_shows_what_the_library_logs_from_any_thread(panel):
    """The library's log lines (here: the worker it starts, from the card's thread or Apply's) reach the panel's log,
    in order with the panel's own lines: the worker's start comes before the result."""
    import slicer

    volume, _truth = held_out_node(slicer.mrmlScene, sampledata.held_out_cases()[0])
    panel.logic.closeRunner()  # the next worker is started, and logged, in this test
    panel.ui.logTextEdit.clear()
    choose(panel, volume)
    apply_and_wait(panel)
    log = panel.ui.logTextEdit.toPlainText()
    started = f"Started a worker in {panel.logic.defaultPython()} (process "
    assert started in log, log
    assert log.index(started) < log.index("Created "), log
