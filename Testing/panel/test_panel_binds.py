"""The panel opens on Slicer 5.10's own Python layer, binds every widget, and follows what the user types and picks.

Each of the audit's defects has a test here or in test_panel_runs.py that failed on the panel as it was (checked
by running these tests on the previous MonaiDeployer.py and .ui).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PySide6 import QtCore, QtTest
from slicer_harness.events import DialogAnswerer, perform, wait_until

from .conftest import SAMPLE_BUNDLE, SAMPLE_MODEL

DEPLOY_APP = SAMPLE_MODEL.parents[3] / "Testing" / "deploy_apps" / "phantom_nifti"


def add_volume(name: str, shape=(8, 9, 10)):
    import slicer

    node = slicer.util.addVolumeFromArray(np.zeros(shape[::-1], dtype=np.int16), np.diag([2.0, 2.0, 3.0, 1.0]), name)
    return node


def type_into(line_edit, text: str) -> None:
    """Clear the field and type ``text`` key by key, as a user does."""
    line_edit.setFocus()
    line_edit.selectAll()
    QtTest.QTest.keyClick(line_edit, QtCore.Qt.Key_Backspace)  # over the selection
    if text:
        QtTest.QTest.keyClicks(line_edit, text)


def card_text(widget) -> str:
    wait_until(lambda: not widget.isDescribing(), 120, "the info card")
    return widget.ui.packageInfoBrowser.toPlainText()


def test_the_panel_opens_with_the_first_volume_and_a_bound_parameter_node(slicer_app):
    """Defect 1: the parameter node could not be made (a node union without None), so nothing was bound."""
    import slicer

    first, second = add_volume("first"), add_volume("second")
    module = slicer.util.getModule("MonaiDeployer")
    representation = module.widgetRepresentation()
    widget = representation.self()
    representation.enter()
    try:
        parameters = widget.logic.getParameterNode()
        assert parameters.inputVolume is first
        assert widget.ui.inputSelector.currentNode() is first
        widget.ui.inputSelector.setCurrentNode(second)
        assert parameters.inputVolume is second  # widget -> parameter node
        parameters.inputVolume = first
        assert widget.ui.inputSelector.currentNode() is first  # parameter node -> widget
        for combo, parameter, value in ((widget.ui.modeComboBox, "mode", "bundle"),
                                        (widget.ui.deviceComboBox, "device", "cpu"),
                                        (widget.ui.appLaunchComboBox, "appLaunch", "cold")):
            combo.currentIndex = combo.findText(value)
            assert getattr(parameters, parameter) == value
        widget.ui.madeEnvironmentCheckBox.checked = True
        assert parameters.madeEnvironment is True
    finally:
        representation.exit()
        slicer.mrmlScene.Clear(0)


def test_the_time_out_keeps_the_spin_box_maximum_of_the_ui(panel):
    """Defect 5: Slicer's int connector set the maximum to 2**31-1 without a range annotation."""
    assert panel.ui.runTimeoutSpinBox.maximum == 86400
    panel.ui.runTimeoutSpinBox.value = 90
    assert panel.logic.getParameterNode().runTimeout == 90


@pytest.mark.parametrize("text", [str(SAMPLE_BUNDLE), str(DEPLOY_APP), "ghcr.io/org/map:1.0", str(SAMPLE_MODEL), ""])
def test_every_typed_package_reaches_the_parameter_node(panel, text):
    """Defect 2: a folder, an image reference or an empty field never reached packagePath (ctkPathLineEdit's
    nameFilters validator), so Apply ran the previous package."""
    parameters = panel.logic.getParameterNode()
    type_into(panel.ui.packagePathLineEdit, "/somewhere/previous.ts")
    assert parameters.packagePath == "/somewhere/previous.ts"
    type_into(panel.ui.packagePathLineEdit, text)
    assert parameters.packagePath == text


def test_worker_python_and_app_model_can_be_cleared(panel):
    parameters = panel.logic.getParameterNode()
    for line_edit, parameter in ((panel.ui.workerPythonLineEdit, "workerPython"),
                                 (panel.ui.appModelLineEdit, "appModelPath")):
        type_into(line_edit, "/opt/env/bin/python")
        assert getattr(parameters, parameter) == "/opt/env/bin/python"
        type_into(line_edit, "")
        assert getattr(parameters, parameter) == ""


def test_file_and_folder_buttons_fill_the_field_and_the_parameter_node(panel, tmp_path):
    parameters = panel.logic.getParameterNode()
    bundle = shutil.copytree(SAMPLE_BUNDLE, tmp_path / "PhantomBundle")
    with DialogAnswerer(lambda dialog: str(bundle)) as answers:
        perform(panel.ui.packageFolderButton.click)
    assert parameters.packagePath == str(bundle)
    assert panel.ui.packagePathLineEdit.text == str(bundle)
    with DialogAnswerer(lambda dialog: str(SAMPLE_MODEL)) as more:
        perform(panel.ui.packageFileButton.click)
    assert parameters.packagePath == str(SAMPLE_MODEL)
    assert answers.asked == ["Choose a model package folder"] and more.asked == ["Choose a model package file"]


def test_the_card_describes_each_kind_and_says_why_a_path_is_not_a_package(panel, tmp_path):
    """Defect 3: ``_`` was shadowed in the card's code, so an unusable path raised in a timer slot instead of
    showing its reason, and the card kept the previous package."""
    type_into(panel.ui.packagePathLineEdit, str(SAMPLE_MODEL))
    text = card_text(panel)
    assert "PhantomUNet" in text and "Mode: torchscript" in text and "organ" in text and "lesion" in text
    type_into(panel.ui.packagePathLineEdit, str(SAMPLE_BUNDLE))
    assert "Mode: bundle" in card_text(panel)
    type_into(panel.ui.packagePathLineEdit, str(DEPLOY_APP))
    assert "no models/ folder and no model file; choose the model the app takes with -m" in card_text(panel)
    type_into(panel.ui.appModelLineEdit, str(SAMPLE_MODEL))  # Advanced: Deploy app model
    assert "Mode: deploy" in card_text(panel)
    type_into(panel.ui.appModelLineEdit, "")
    missing = tmp_path / "nothing-here.ts"
    type_into(panel.ui.packagePathLineEdit, str(missing))
    text = card_text(panel)
    assert text.startswith("This is not a usable model package.")
    assert str(missing) in text and "PhantomUNet" not in text
    type_into(panel.ui.packagePathLineEdit, "")
    assert card_text(panel) == ""


def test_a_package_that_was_described_is_offered_again_next_time(panel):
    type_into(panel.ui.packagePathLineEdit, str(SAMPLE_MODEL))
    assert "Mode: torchscript" in card_text(panel)
    completer = panel.ui.packagePathLineEdit.completer()
    assert str(SAMPLE_MODEL) in completer.model().stringList()


def test_closing_the_scene_and_entering_again_rebinds_the_panel(panel):
    import slicer

    volume = add_volume("before close")
    panel.logic.getParameterNode().inputVolume = volume
    slicer.mrmlScene.Clear(0)  # File / Close scene, with the module open
    after = add_volume("after close")
    parameters = panel.logic.getParameterNode()
    panel.initializeParameterNode()
    assert parameters.inputVolume is after
    assert panel.ui.inputSelector.currentNode() is after
    type_into(panel.ui.packagePathLineEdit, str(SAMPLE_MODEL))
    assert panel.logic.getParameterNode().packagePath == str(SAMPLE_MODEL)
    assert panel.ui.applyButton.enabled


def test_changing_the_device_keeps_the_warmed_worker(panel):
    """The worker does not depend on the device: switching it must not throw the warm-up away."""
    wait_until(lambda: not panel.isWarmingUp(), 120, "the warm-up on entering")
    parameters = panel.logic.getParameterNode()
    runner = panel.logic.runner(parameters.workerPython, parameters.device)
    worker = runner.client.pid
    assert worker is not None and runner.warmed
    panel.ui.deviceComboBox.currentIndex = panel.ui.deviceComboBox.findText("cpu")
    assert parameters.device == "cpu"
    assert panel.logic.runner(parameters.workerPython, parameters.device) is runner
    assert runner.client.pid == worker and runner.device == "cpu"
