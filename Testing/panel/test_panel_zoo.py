"""*Model Zoo...* as a user uses it: the catalogue of a loopback Model Zoo (zoo_server) in the dialog, filtered; a
version downloaded with its progress shown, cancelled or failing without leaving anything, or chosen and run from the
panel at the Dice target; offline, the index's last copy and the cache answer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6 import QtCore, QtTest, QtWidgets
from slicer_harness.events import DialogAnswerer, Heartbeat, wait_until
from zoo_server import PHANTOM, SAMPLE_BUNDLE, zoo_archive

from MonaiDeployerLib.environment.home import home_folder
from MonaiDeployerLib.testing import sampledata
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label, held_out_node, node_array
from MonaiDeployerLib.zoo.listing import size_text

from .test_panel_binds import card_text, type_into
from .test_panel_runs import apply_and_wait

NON_COMMERCIAL = "for non-commercial use only"


@pytest.fixture
def zoo_cache():
    """The panel's Model Zoo cache, empty before and after; the index is the panel's setting."""
    cache = Path(home_folder()) / "zoo"
    shutil.rmtree(cache, ignore_errors=True)
    yield cache
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def zoo_index(zoo, zoo_cache):
    import qt

    from MonaiDeployerLib.panel.zoo_dialog import INDEX_SETTING

    qt.QSettings().setValue(INDEX_SETTING, zoo.index_url)
    yield zoo
    qt.QSettings().remove(INDEX_SETTING)


def open_zoo(panel):
    """Model Zoo..., and the catalogue read."""
    panel.ui.packageZooButton.click()
    dialog = panel._zooDialog
    assert dialog is not None and dialog.dialog.visible
    wait_until(lambda: dialog._reading is None, 30, "the index read")
    return dialog


def names(dialog) -> list:
    table = dialog.ui.bundlesTable
    return [table.item(row, 0).text() for row in range(table.rowCount)]


def row_texts(dialog, name: str) -> list:
    table = dialog.ui.bundlesTable
    row = names(dialog).index(name)
    return [table.item(row, column).text() for column in range(table.columnCount)]


def pick(dialog, name: str, version: str | None = None) -> None:
    """Type the name into the filter, select its row and, if given, the version."""
    dialog.ui.filterLineEdit.text = name
    assert names(dialog) == [name]
    dialog.ui.bundlesTable.selectRow(0)
    if version is not None:
        combo = dialog.ui.versionComboBox
        combo.currentIndex = next(index for index in range(combo.count) if combo.itemData(index) == version)


def close(dialog) -> None:
    dialog.ui.buttonBox.button(QtWidgets.QDialogButtonBox.StandardButton.Close).click()


def staging_folders(cache: Path) -> list:
    return sorted(path.name for path in cache.glob("monaideployer-*")) if cache.is_dir() else []


def test_the_dialog_lists_and_filters_the_catalogue_and_its_choice_runs_from_the_panel_at_dice(panel, zoo_index,
                                                                                                 zoo_cache):
    import slicer

    zoo = zoo_index
    dialog = open_zoo(panel)
    assert dialog.ui.indexLineEdit.text == zoo.index_url
    assert dialog.ui.indexSourceLabel.text.startswith(f"{zoo.index_url}, read ")
    assert dialog.ui.indexSourceLabel.text.endswith(": 2 bundles.")
    assert names(dialog) == [PHANTOM, "spleen_ct_segmentation"]
    assert row_texts(dialog, PHANTOM) == [PHANTOM, "1.0.0", "", "(known once downloaded)"]
    dialog.ui.filterLineEdit.text = "SPLEEN"
    assert names(dialog) == ["spleen_ct_segmentation"]
    dialog.ui.filterLineEdit.text = "no such bundle"
    assert names(dialog) == [] and not dialog.ui.downloadButton.enabled

    pick(dialog, PHANTOM)
    combo = dialog.ui.versionComboBox
    assert [combo.itemText(index) for index in range(combo.count)] == ["1.0.0", "0.9.0"]
    assert dialog.ui.downloadButton.text == "Download and use"
    wait_until(lambda: row_texts(dialog, PHANTOM)[2] == size_text(len(zoo.good)), 30, "the size asked of the server")
    assert zoo.requests[f"HEAD /files/{PHANTOM}_v1.0.0.zip"] == 1
    combo.currentIndex = 1  # an older version: the row follows, and keeps it through the filter
    assert row_texts(dialog, PHANTOM)[1] == "0.9.0"
    dialog.ui.filterLineEdit.text = "organ"  # the row stays, and stays selected
    assert dialog.selectedBundle().name == PHANTOM and combo.currentData == "0.9.0"
    dialog.ui.filterLineEdit.text = "spleen"  # the row goes, and its selection with it
    assert dialog.selectedBundle() is None and combo.count == 0
    dialog.ui.filterLineEdit.text = "phantom"
    assert row_texts(dialog, PHANTOM)[1] == "0.9.0"
    dialog.ui.bundlesTable.selectRow(0)
    assert combo.currentData == "0.9.0"
    combo.currentIndex = 0
    dialog.ui.downloadButton.click()
    wait_until(lambda: panel._zooDialog is None, 60, "the download and the dialog closed")
    folder = zoo_cache / PHANTOM / "1.0.0"
    assert panel.ui.packagePathLineEdit.text == str(folder) and (folder / "configs" / "inference.json").is_file()
    assert f"Model Zoo: {PHANTOM} 1.0.0, kept in {folder}." in panel.ui.logTextEdit.toPlainText()
    assert f"Licence: {NON_COMMERCIAL}" in card_text(panel)

    case = sampledata.held_out_cases()[0]
    volume, truth = held_out_node(slicer.mrmlScene, case)
    panel.ui.inputSelector.setCurrentNode(volume)
    with DialogAnswerer(lambda _dialog: "Yes") as trust:
        apply_and_wait(panel)
    assert len(trust.asked) == 1 and f"Its licence: {NON_COMMERCIAL} (LICENSE: Apache License" in trust.asked[0]
    assert panel.ui.stageLabel.text.startswith("Created "), panel.ui.logTextEdit.toPlainText()
    (output,) = slicer.util.getNodesByClass("vtkMRMLLabelMapVolumeNode")
    scores = dice_per_label(node_array(output), truth, sampledata.LABELS)
    assert min(scores.values()) >= MINIMUM_DICE, scores

    dialog = open_zoo(panel)  # what is downloaded is described, and used without a second download
    assert row_texts(dialog, PHANTOM)[1:3] == ["1.0.0 (downloaded)", size_text(len(zoo.good))]
    assert row_texts(dialog, PHANTOM)[3].startswith("The phantom UNet of PhantomUNet.ts as a MONAI Bundle.")
    pick(dialog, PHANTOM)
    assert dialog.ui.versionComboBox.currentText == "1.0.0 (downloaded)" and dialog.ui.downloadButton.text == "Use"
    panel.ui.packagePathLineEdit.text = ""
    QtTest.QTest.keyClick(dialog.ui.filterLineEdit, QtCore.Qt.Key_Return)  # Enter: the dialog's default button
    assert panel._zooDialog is None and panel.ui.packagePathLineEdit.text == str(folder)
    assert zoo.requests[f"/files/{PHANTOM}_v1.0.0.zip"] == 1


def test_a_download_shows_its_progress_and_a_cancel_a_failure_or_a_close_leaves_nothing(panel, zoo_index, zoo_cache):
    zoo = zoo_index
    large = zoo_archive("large", bundle=SAMPLE_BUNDLE, padding=3 << 20)
    zoo.publish("large", "1.0.0", large, fault="slow")
    zoo.publish("broken", "1.0.0", zoo.good, checksum="0" * 40)
    panel.ui.packagePathLineEdit.text = ""
    dialog = open_zoo(panel)
    pick(dialog, "large")
    dialog.ui.downloadButton.click()
    assert dialog.ui.cancelDownloadButton.enabled and not dialog.ui.downloadButton.enabled
    assert not dialog.ui.filterLineEdit.enabled and not dialog.ui.bundlesTable.enabled
    bar = dialog.ui.downloadProgressBar
    with Heartbeat() as heartbeat:
        wait_until(lambda: f" of {size_text(len(large))} at " in dialog.ui.statusLabel.text and bar.value >= 20, 60,
                   "the download's progress shown")
    print(f"longest GUI-thread block while downloading: {heartbeat.longest * 1000:.0f} ms")
    assert bar.value < 100
    assert dialog.ui.statusLabel.text.startswith("Downloading large 1.0.0: ") and bar.maximum == 100
    dialog.ui.cancelDownloadButton.click()
    wait_until(lambda: dialog.download is None, 30, "the download cancelled")
    assert dialog.ui.statusLabel.text == "Download cancelled: nothing of it was kept."
    assert staging_folders(zoo_cache) == [] and not (zoo_cache / "large").exists()
    assert dialog.ui.downloadButton.enabled and panel.ui.packagePathLineEdit.text == ""

    pick(dialog, "broken")
    dialog.ui.downloadButton.click()
    wait_until(lambda: dialog.download is None, 30, "the download failed")
    status = dialog.ui.statusLabel.text
    assert status.startswith("Download failed: the archive of broken 1.0.0 from ") and "\n" not in status
    assert status.endswith(f"expected {'0' * 40}): nothing was kept")
    assert staging_folders(zoo_cache) == [] and not (zoo_cache / "broken").exists()

    pick(dialog, "large")
    dialog.ui.downloadButton.click()
    wait_until(lambda: staging_folders(zoo_cache), 30, "the download started")
    close(dialog)
    assert panel._zooDialog is None
    wait_until(lambda: not staging_folders(zoo_cache), 30, "the closed dialog's download stopped and cleaned up")
    assert not (zoo_cache / "large").exists() and panel.ui.packagePathLineEdit.text == ""


def test_offline_the_dialog_shows_the_index_last_copy_and_uses_what_is_cached(panel, zoo_index, zoo_cache):
    zoo = zoo_index
    dialog = open_zoo(panel)
    pick(dialog, PHANTOM, "0.9.0")
    dialog.ui.downloadButton.click()
    wait_until(lambda: panel._zooDialog is None, 60, "the download")
    zoo.shutdown()
    zoo.server_close()  # the Model Zoo gone
    panel.ui.packagePathLineEdit.text = ""
    dialog = open_zoo(panel)
    assert dialog.ui.indexSourceLabel.text.startswith(
        f"{zoo.index_url} cannot be read (cannot connect (offline, or the server is down)): this is its last copy, "
        "from ")
    pick(dialog, PHANTOM, "0.9.0")
    assert dialog.ui.downloadButton.text == "Use"
    dialog.ui.downloadButton.click()
    assert panel.ui.packagePathLineEdit.text == str(zoo_cache / PHANTOM / "0.9.0")
    dialog = open_zoo(panel)
    pick(dialog, PHANTOM, "1.0.0")
    dialog.ui.downloadButton.click()
    wait_until(lambda: dialog.download is None, 30, "the download failed")
    assert dialog.ui.statusLabel.text == (
        f"Download failed: cannot download {PHANTOM} 1.0.0 from {zoo.url}/files/{PHANTOM}_v1.0.0.zip: cannot connect "
        "(offline, or the server is down)")
    close(dialog)
    assert panel.ui.packagePathLineEdit.text == str(zoo_cache / PHANTOM / "0.9.0")
    type_into(panel.ui.packagePathLineEdit, f"zoo:{PHANTOM}@0.9.0")  # typed: the cached version, offline
    assert "Phantom organ and lesion bundle" in card_text(panel) and f"Licence: {NON_COMMERCIAL}" in card_text(panel)


def test_an_index_that_cannot_be_read_is_one_line_and_leaves_nothing_to_choose(panel, zoo_index, tmp_path):
    import qt

    from MonaiDeployerLib.panel.zoo_dialog import INDEX_SETTING

    dialog = open_zoo(panel)
    assert names(dialog)
    missing = tmp_path / "model_info.json"
    dialog.ui.indexLineEdit.text = str(missing)
    dialog.ui.readIndexButton.click()
    wait_until(lambda: dialog._reading is None, 30, "the index read")
    assert dialog.ui.indexSourceLabel.text == (
        f"Cannot read the index: cannot read the Model Zoo index at {missing}: no such file, and not an http:// or "
        "https:// address; no earlier copy of it is kept here")
    assert names(dialog) == [] and not dialog.ui.downloadButton.enabled
    close(dialog)
    assert qt.QSettings().value(INDEX_SETTING) == str(missing)  # the panel's setting, for next time


def test_the_environment_variable_comes_before_the_panels_setting(panel, zoo_index, monkeypatch, tmp_path):
    import qt

    from MonaiDeployerLib.panel.zoo_dialog import INDEX_SETTING

    zoo = zoo_index
    qt.QSettings().setValue(INDEX_SETTING, str(tmp_path / "model_info.json"))  # a setting that would fail
    monkeypatch.setenv("MONAIDEPLOYER_ZOO_INDEX", zoo.index_url)
    dialog = open_zoo(panel)
    assert dialog.ui.indexLineEdit.text == zoo.index_url and dialog.ui.indexLineEdit.readOnly
    assert "MONAIDEPLOYER_ZOO_INDEX" in dialog.ui.indexLineEdit.toolTip
    assert dialog.ui.indexSourceLabel.text.startswith(f"{zoo.index_url}, read ") and names(dialog)
    close(dialog)
    assert qt.QSettings().value(INDEX_SETTING) == str(tmp_path / "model_info.json")  # kept for when it is unset


def test_a_typed_zoo_reference_is_looked_up_in_the_panels_index(panel, zoo_index, zoo_cache, monkeypatch):
    """The panel's setting names the loopback index; without it the Model Zoo's own (unreachable here) is read."""
    monkeypatch.delenv("MONAIDEPLOYER_ZOO_INDEX", raising=False)
    type_into(panel.ui.packagePathLineEdit, f"zoo:{PHANTOM}@0.9.0")
    assert "Phantom organ and lesion bundle" in card_text(panel)
    assert (zoo_cache / PHANTOM / "0.9.0" / "configs" / "inference.json").is_file()
    assert zoo_index.requests[f"/files/{PHANTOM}_v0.9.0.zip"] == 1
