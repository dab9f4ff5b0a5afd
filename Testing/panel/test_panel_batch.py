"""The panel's Batch section driven as a user does: check scene volumes, name a folder of files and an output folder,
Run on all, follow the progress over the cases, Cancel, and click a row of the results table to see its result."""

from __future__ import annotations

import time

from slicer_harness.events import perform, wait_until

from MonaiDeployerLib import Volume, read_volume, write_volume
from MonaiDeployerLib.scene.mrml import segment_mask
from MonaiDeployerLib.testing import sampledata
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice, dice_per_label, held_out_node

from .test_panel_binds import type_into
from .test_panel_runs import RUN_TIMEOUT, Watcher, big_phantom, choose, scene_nodes, worker_processes


def check(panel, nodes) -> None:
    """Tick the volumes' boxes in the list, as a user clicks them."""
    from PySide6 import QtCore

    listed = panel.ui.batchVolumesListWidget
    wanted = {node.GetID() for node in nodes}
    for row in range(listed.count):
        item = listed.item(row)
        if item.data(QtCore.Qt.UserRole) in wanted:
            item.setCheckState(QtCore.Qt.Checked)


def click_row(panel, row: int) -> None:
    """Click the row's first cell with the mouse."""
    from PySide6 import QtCore, QtTest

    cells = panel.ui.batchResultsTable
    centre = cells.visualItemRect(cells.item(row, 0)).center()
    perform(lambda: QtTest.QTest.mouseClick(cells.viewport(), QtCore.Qt.LeftButton, QtCore.Qt.NoModifier, centre))


def table(panel) -> list:
    cells = panel.ui.batchResultsTable
    return [tuple(cells.item(row, column).text() for column in range(3)) for row in range(cells.rowCount)]


def test_a_batch_of_scene_volumes_and_a_folder_gives_nodes_files_and_a_table_that_shows_each(panel, tmp_path):
    import slicer

    held_out = sampledata.held_out_cases()
    nodes, truths = zip(*(held_out_node(slicer.mrmlScene, case) for case in held_out[:2]), strict=True)
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    inputs.mkdir()
    folder_case = held_out[2]
    image, _truth = sampledata.render_phantom(folder_case["shape"], folder_case["ijk_to_ras"], folder_case["seed"])
    write_volume(inputs / "lps-like.nii.gz", Volume(image, folder_case["ijk_to_ras"]))
    (inputs / "broken.nrrd").write_text("NRRD0004\nnot a header\n")
    choose(panel, nodes[0], output_kind="segmentation")
    assert [panel.ui.batchVolumesListWidget.item(row).text() for row in range(2)] == [node.GetName()
                                                                                      for node in nodes]
    check(panel, nodes)
    type_into(panel.ui.batchInputFolderLineEdit, str(inputs))
    assert not panel.ui.batchApplyButton.enabled  # the folder's results need an output folder
    type_into(panel.ui.batchOutputFolderLineEdit, str(outputs))
    assert panel.ui.batchApplyButton.enabled
    with Watcher(panel) as watched:
        perform(panel.ui.batchApplyButton.click)
        wait_until(lambda: not panel.isRunning(), RUN_TIMEOUT, "the batch")
    rows = table(panel)
    assert [(name, status) for name, status, _seconds in rows] == [
        (nodes[0].GetName(), "done"), (nodes[1].GetName(), "done"), (str(inputs / "broken.nrrd"), "failed"),
        (str(inputs / "lps-like.nii.gz"), "done")]
    assert panel.ui.stageLabel.text == "1 of 4 cases failed (3 done); the log says why."
    assert f"{inputs / 'broken.nrrd'}: failed: cannot read {inputs / 'broken.nrrd'}" in \
        panel.ui.logTextEdit.toPlainText()
    assert any(stage.startswith("Case 2 of 4, ") for stage in watched.stages), watched.stages
    assert watched.values[-1] == 4 and panel.ui.progressBar.maximum == 4

    segmentations = slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
    assert len(segmentations) == 2
    for index, (node, truth, segmentation) in enumerate(zip(nodes, truths, segmentations, strict=True)):
        click_row(panel, index)
        composites = slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")
        assert {composite.GetBackgroundVolumeID() for composite in composites} == {node.GetID()}
        assert segmentation.GetName() == f"{node.GetName()} segmentation"
        segments = segmentation.GetSegmentation()
        for value, name in sampledata.LABELS.items():
            mask = segment_mask(segmentation, segments.GetSegmentIdBySegmentName(name), node)
            assert dice(mask, truth == value) >= MINIMUM_DICE, (node.GetName(), name)

    (written,) = outputs.iterdir()
    assert written.name == "lps-like.seg.nrrd"
    labelmap = read_volume(written)
    scores = dice_per_label(labelmap.array, sampledata.render_phantom(
        labelmap.shape, labelmap.ijk_to_ras, folder_case["seed"])[1], sampledata.LABELS)
    assert min(scores.values()) >= MINIMUM_DICE, scores
    before = len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"))
    click_row(panel, 3)  # a click on the file's row loads it
    loaded = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
    assert len(loaded) == before + 1 and loaded[-1].GetName() == "lps-like"
    composites = slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")
    assert {composite.GetBackgroundVolumeID() for composite in composites} == {loaded[-1].GetID()}
    assert len(slicer.util.getNodesByClass("vtkMRMLSegmentationNode")) == 3
    assert panel.ui.batchApplyButton.enabled and panel.ui.applyButton.enabled


def test_cancel_stops_the_batch_and_keeps_the_finished_cases(panel):
    import slicer

    small, _truth = held_out_node(slicer.mrmlScene, sampledata.held_out_cases()[0])
    big = [big_phantom() for _ in range(3)]
    choose(panel, small)
    check(panel, [small, *big])
    perform(panel.ui.batchApplyButton.click)
    wait_until(lambda: len(table(panel)) == 1 and panel.ui.stageLabel.text.startswith("Case 2 of 4, "), RUN_TIMEOUT,
               "the first case done and the second running")
    before = scene_nodes()
    clicked = time.monotonic()
    perform(panel.ui.cancelButton.click)
    wait_until(lambda: not panel.isRunning(), 2, "the batch stopped after Cancel")
    print(f"Cancel took {time.monotonic() - clicked:.2f} s")
    assert panel.ui.stageLabel.text == "Cancelled after 1 of 4 cases; the finished ones are kept."
    assert table(panel)[0][:2] == (small.GetName(), "done") and len(table(panel)) == 1
    assert scene_nodes() == before  # nothing of the cancelled case
    wait_until(lambda: not worker_processes(), 5, "the worker process ended")
    assert panel.ui.batchApplyButton.enabled
