"""*Run on: a server*: the panel lists a server's models with their card, and Apply and Cancel run there, against a
real ``serve`` (NVIDIA Triton from PyTriton's wheel) on loopback."""

from __future__ import annotations

import time

import pytest
import vtk
from serve_process import served_until_done
from slicer_harness.events import perform, wait_until

from MonaiDeployerLib.serving.remote import RemoteServer
from MonaiDeployerLib.testing import sampledata
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label, held_out_node, node_array

from .conftest import SAMPLE_BUNDLE, SAMPLE_MODEL
from .test_panel_binds import card_text, type_into
from .test_panel_runs import RUN_TIMEOUT, big_phantom, scene_nodes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served_until_done([SAMPLE_MODEL, SAMPLE_BUNDLE, "--trust", "--device", "cpu"], models=2,
                                 errors=tmp_path_factory.mktemp("serve") / "stderr.txt")


def run_on(panel, url: str) -> None:
    """Run on: a server, at ``url``, typed as a user does; the card then lists the server's models."""
    assert panel.ui.serverUrlLineEdit.isHidden() and panel.ui.servedModelComboBox.isHidden()  # this computer's panel
    panel.ui.runOnComboBox.currentIndex = panel.ui.runOnComboBox.findText("a server")
    assert panel.logic.getParameterNode().runOn == "a server" and not panel.ui.serverUrlLineEdit.isHidden()
    type_into(panel.ui.serverUrlLineEdit, url)
    type_into(panel.ui.packagePathLineEdit, "")


def choose_served(panel, mode: str) -> str:
    """The served model of ``mode`` chosen in the list, as a user picks it; its name."""
    combo = panel.ui.servedModelComboBox
    wait_until(lambda: combo.count == 2, 60, "the server's models listed")
    index = next(index for index in range(combo.count) if combo.itemText(index).endswith(f"({mode})"))
    combo.setCurrentIndex(index)
    combo.activated.emit(index)  # what a user's pick emits
    return combo.itemData(index)


def test_the_panel_lists_the_servers_models_and_runs_the_chosen_one_there(panel, server):
    import slicer

    case = sampledata.held_out_cases()[1]
    volume, truth = held_out_node(slicer.mrmlScene, case)
    panel.ui.inputSelector.setCurrentNode(volume)
    run_on(panel, server.url)
    assert "Choose one of its 2 models." in card_text(panel)
    name = choose_served(panel, "torchscript")
    assert panel.logic.getParameterNode().packagePath == name
    card = card_text(panel)
    assert "Phantom organ and lesion (tiny UNet) 1.0.0" in card and f"{server.url}, as the model {name}" in card
    assert "organ" in card and "lesion" in card
    perform(panel.ui.applyButton.click)
    wait_until(lambda: not panel.isRunning(), RUN_TIMEOUT, "the run on the server")
    assert panel.ui.stageLabel.text.startswith("Created "), panel.ui.logTextEdit.toPlainText()
    (output,) = slicer.util.getNodesByClass("vtkMRMLLabelMapVolumeNode")
    input_matrix, output_matrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(input_matrix)
    output.GetIJKToRASMatrix(output_matrix)
    assert all(abs(input_matrix.GetElement(r, c) - output_matrix.GetElement(r, c)) < 1e-9
               for r in range(4) for c in range(4))
    assert min(dice_per_label(node_array(output), truth, sampledata.LABELS).values()) >= MINIMUM_DICE


def test_cancel_on_a_server_stops_the_run_there_within_two_seconds(panel, server):
    volume = big_phantom()
    panel.ui.inputSelector.setCurrentNode(volume)
    run_on(panel, server.url)
    choose_served(panel, "bundle")
    card_text(panel)
    before = scene_nodes()
    perform(panel.ui.applyButton.click)
    wait_until(lambda: panel.ui.stageLabel.text == "inference" and panel.ui.progressBar.value > 0, RUN_TIMEOUT,
               "the server's sliding window started")
    run_id = panel._job.request.run_id  # the run's id on the server
    clicked = time.monotonic()
    perform(panel.ui.cancelButton.click)
    wait_until(lambda: not panel.isRunning(), 2, "the run stopped after Cancel")
    assert panel.ui.stageLabel.text == "Cancelled; the scene is unchanged."
    assert scene_nodes() == before
    remote = RemoteServer(server.url)
    wait_until(lambda: not remote.run_state(run_id)["running"], max(0.1, 2 - (time.monotonic() - clicked)),
               "the run stopped on the server")
    assert panel.ui.applyButton.enabled
