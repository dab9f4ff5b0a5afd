"""*Model Zoo...*: the Model Zoo's catalogue in a dialog with a filter; the chosen version downloaded with a progress
bar and Cancel, then handed to the panel as its package. Window-modal, not run in a loop of its own: the panel's
timers go on while it is open. The reading and downloading are ZooBrowser's, off the GUI thread.

Imported by the panel only when the dialog opens: it needs Slicer's Qt.
"""

from __future__ import annotations

from collections.abc import Callable

import qt
import slicer
from slicer.i18n import tr as _

from ..errors import Cancelled, MonaiDeployerError
from ..zoo.catalogue import index_url
from ..zoo.download import bundle_folder
from ..zoo.listing import size_text
from .zoo_browser import ZooBrowser, matching

INDEX_SETTING = "MonaiDeployer/ZooIndex"  # the panel's setting: an index URL or file ("": the environment's)
POLL_INTERVAL_MS = 100
NAME, VERSION, SIZE, DESCRIPTION = range(4)  # the table's columns


class ModelZooDialog:
    """``chosen(folder, name, version)`` is called when a version is downloaded (or found in the cache) and chosen;
    ``closed()`` when the dialog closes, either way."""

    def __init__(self, uiPath: str, chosen: Callable[[str, str, str], None], closed: Callable[[], None],
                 parent=None):
        self.dialog = slicer.util.loadUI(uiPath)
        if parent is not None:
            self.dialog.setParent(parent, qt.Qt.Dialog)
        self.dialog.setWindowModality(qt.Qt.WindowModal)
        self.ui = slicer.util.childWidgetVariables(self.dialog)
        self._chosen, self._closed = chosen, closed
        self._browser = ZooBrowser()
        self._listing = None  # the ZooListing shown
        self._reading = None  # the future of the ZooListing being read
        self.download = None  # the ZooDownload in flight
        self._rows = []  # the ListedBundle of each row of the table, in order
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

        self.ui.indexLineEdit.text = qt.QSettings().value(INDEX_SETTING) or ""
        self.ui.indexLineEdit.placeholderText = index_url()  # what an empty field reads
        self.ui.indexLineEdit.connect("returnPressed()", self.readIndex)
        self.ui.readIndexButton.connect("clicked(bool)", lambda _checked: self.readIndex())
        self.ui.filterLineEdit.connect("textChanged(QString)", lambda _text: self._fillTable())
        self.ui.bundlesTable.connect("itemSelectionChanged()", self._listVersions)
        self.ui.versionComboBox.connect("currentIndexChanged(int)", lambda _index: self._updateButtons())
        self.ui.bundlesTable.connect("cellDoubleClicked(int,int)", lambda _row, _column: self.onDownload())
        self.ui.downloadButton.connect("clicked(bool)", lambda _checked: self.onDownload())
        self.ui.cancelDownloadButton.connect("clicked(bool)", lambda _checked: self.onCancelDownload())
        self.ui.buttonBox.connect("rejected()", self.dialog.reject)
        self.dialog.connect("finished(int)", self._onFinished)
        self.ui.bundlesTable.horizontalHeader().setSectionResizeMode(NAME, qt.QHeaderView.ResizeToContents)
        self._updateButtons()

    def open(self) -> None:
        """Show the dialog and read the index."""
        self.dialog.open()
        self.readIndex()

    def readIndex(self) -> None:
        """Read the index the field names (and remember it), off the GUI thread."""
        if self.download is not None:
            return
        index = self.ui.indexLineEdit.text.strip()
        qt.QSettings().setValue(INDEX_SETTING, index)
        self.ui.indexSourceLabel.text = _("Reading {index}...").format(index=index_url(index or None))
        self._reading = self._browser.read(index)
        self._timer.start()
        self._updateButtons()

    def selectedBundle(self):
        rows = {index.row() for index in self.ui.bundlesTable.selectionModel().selectedRows()}
        return self._rows[min(rows)] if rows else None

    def onDownload(self) -> None:
        """The chosen version: from the cache, else downloaded first."""
        bundle = self.selectedBundle()
        if bundle is None or self.download is not None or self._listing is None:
            return
        version = self.ui.versionComboBox.currentData
        if version in bundle.cached:
            self._use(self._listing.catalogue.archive(bundle.name, version), bundle_folder(bundle.name, version))
            return
        self.download = self._browser.download(self._listing.catalogue.archive(bundle.name, version))
        self.ui.statusLabel.text = _("Downloading {name} {version}...").format(name=bundle.name, version=version)
        self.ui.downloadProgressBar.setRange(0, 0)  # busy until the size is known
        self._timer.start()
        self._updateButtons()

    def onCancelDownload(self) -> None:
        if self.download is not None:
            self.download.cancel.set()  # it stops at its next chunk; the next poll says so
            self.ui.statusLabel.text = _("Cancelling the download...")

    def _poll(self) -> None:
        if self._reading is not None and self._reading.done():
            self._showListing(self._reading)
            self._reading = None
        if self.download is not None:
            self._showDownload(self.download)
        if self._reading is None and self.download is None:
            self._timer.stop()
        self._updateButtons()

    def _showListing(self, future) -> None:
        try:
            self._listing = future.result()
        except MonaiDeployerError as error:  # no index and no copy of it: nothing to choose from
            self._listing = None
            self._fillTable()
            self.ui.indexSourceLabel.text = _("Cannot read the index: {error}").format(error=error)
            return
        catalogue = self._listing.catalogue
        if catalogue.offline_reason:
            self.ui.indexSourceLabel.text = _("{index} cannot be read ({reason}): this is its last copy, from "
                                              "{fetched}.").format(index=catalogue.url,
                                                                   reason=catalogue.offline_reason,
                                                                   fetched=catalogue.fetched)
        else:
            self.ui.indexSourceLabel.text = _("{index}, read {fetched}: {count} bundles.").format(
                index=catalogue.url, fetched=catalogue.fetched, count=len(self._listing.bundles))
        self._fillTable()

    def _fillTable(self) -> None:
        """The bundles that match the filter; the one selected stays selected."""
        selected = self.selectedBundle()
        table = self.ui.bundlesTable
        self._rows = matching(self._listing.bundles, self.ui.filterLineEdit.text) if self._listing else []
        table.setRowCount(len(self._rows))
        for row, bundle in enumerate(self._rows):
            size = size_text(bundle.size_bytes) if bundle.size_bytes is not None else ""
            texts = {NAME: bundle.name, VERSION: bundle.newest, SIZE: size,
                     DESCRIPTION: bundle.description or _("(known once downloaded)")}
            for column, text in texts.items():
                item = qt.QTableWidgetItem(text)
                item.setToolTip(bundle.description or bundle.name)
                table.setItem(row, column, item)
        chosen = next((row for row, bundle in enumerate(self._rows) if selected and bundle.name == selected.name), -1)
        if chosen >= 0:
            table.selectRow(chosen)
        else:
            table.clearSelection()
        self._listVersions()

    def _listVersions(self) -> None:
        combo = self.ui.versionComboBox
        combo.clear()
        bundle = self.selectedBundle()
        for version in bundle.versions if bundle else []:
            combo.addItem(_("{version} (downloaded)").format(version=version) if version in bundle.cached else
                          version, version)
        self._updateButtons()

    def _showDownload(self, download) -> None:
        if download.progress is not None:
            done, total, rate = download.progress
            bar = self.ui.downloadProgressBar
            if total:
                bar.setRange(0, 100)
                bar.value = round(100 * done / total)
                self.ui.statusLabel.text = _("Downloading {name} {version}: {done} of {total} at {rate}/s").format(
                    name=download.archive.name, version=download.archive.version, done=size_text(done),
                    total=size_text(total), rate=size_text(rate))
            else:
                self.ui.statusLabel.text = _("Downloading {name} {version}: {done} at {rate}/s").format(
                    name=download.archive.name, version=download.archive.version, done=size_text(done),
                    rate=size_text(rate))
        if not download.future.done():
            return
        self.download = None
        self.ui.downloadProgressBar.setRange(0, 100)
        try:
            folder = download.future.result()
        except Cancelled:
            self.ui.downloadProgressBar.value = 0
            self.ui.statusLabel.text = _("Download cancelled: nothing of it was kept.")
            return
        except MonaiDeployerError as error:
            self.ui.downloadProgressBar.value = 0
            self.ui.statusLabel.text = _("Download failed: {error}").format(error=error)
            return
        self.ui.downloadProgressBar.value = 100
        self._use(download.archive, folder)

    def _use(self, archive, folder: str) -> None:
        self._chosen(folder, archive.name, archive.version)
        self.dialog.accept()

    def _updateButtons(self) -> None:
        downloading = self.download is not None
        bundle = self.selectedBundle()
        self.ui.downloadButton.enabled = bundle is not None and not downloading
        self.ui.downloadButton.text = _("Use") if bundle is not None and \
            self.ui.versionComboBox.currentData in bundle.cached else _("Download and use")
        self.ui.cancelDownloadButton.enabled = downloading
        for widget in (self.ui.indexLineEdit, self.ui.bundlesTable, self.ui.versionComboBox):
            widget.enabled = not downloading
        self.ui.readIndexButton.enabled = not downloading and self._reading is None

    def _onFinished(self, _result: int) -> None:
        """Closed, by Close, Escape or a choice: a download in flight stops and leaves nothing behind."""
        self._timer.stop()
        self._browser.shutdown(self.download)
        self.download = None
        self._closed()
