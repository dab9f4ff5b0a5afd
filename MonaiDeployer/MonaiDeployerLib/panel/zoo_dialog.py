"""*Model Zoo...*: the Model Zoo's catalogue in a dialog with a filter; the chosen version downloaded with a progress
bar and Cancel, then handed to the panel as its package. Window-modal, not run in a loop of its own: the panel's
timers go on while it is open. The reading, asking and downloading are ZooBrowser's, off the GUI thread.

Imported by the panel only when the dialog opens: it needs Slicer's Qt.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import qt
import slicer
from slicer.i18n import tr as _

from ..errors import Cancelled, MonaiDeployerError
from ..zoo.catalogue import DEFAULT_INDEX, INDEX_VARIABLE
from ..zoo.download import bundle_folder
from ..zoo.listing import size_text
from .zoo_browser import ZooBrowser, matching

INDEX_SETTING = "MonaiDeployer/ZooIndex"  # the panel's setting: an index URL or file ("": the Model Zoo's)
POLL_INTERVAL_MS = 100
NAME, VERSION, SIZE, DESCRIPTION = range(4)  # the table's columns

logger = logging.getLogger(__name__)


def panel_index() -> str:
    """The index the panel's setting names, where ``$MONAIDEPLOYER_ZOO_INDEX`` (which comes first) is not set
    ("": the environment's, else the Model Zoo's)."""
    return "" if os.environ.get(INDEX_VARIABLE) else qt.QSettings().value(INDEX_SETTING) or ""


def failure_text(error: Exception) -> str:
    """One line for the dialog: the library's own message, or, for anything else (a full disk...), its kind too."""
    if isinstance(error, MonaiDeployerError):
        return str(error)
    logger.error("The Model Zoo dialog's work failed", exc_info=error)
    return f"{type(error).__name__}: {error}".splitlines()[0]


class ModelZooDialog:
    """``chosen(folder, name, version)`` is called when a version is downloaded (or found in the cache) and chosen;
    ``closed()`` when the dialog closes, either way.

    Each row shows the version chosen for it (the newest unless another is picked in *Version*) and that version's
    size: from the cache, else as its server states it, asked when the row is selected.
    """

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
        self._versions = {}  # {name: the version chosen for it}, when not the newest
        self._sizes = {}  # {(name, version): bytes or None} as the servers stated them
        self._asking = {}  # {(name, version): future of its size}
        self._listingVersions = False  # the version combo is being filled: its signals are not the user's
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

        self._indexVariable = os.environ.get(INDEX_VARIABLE, "")  # it comes before the panel's setting
        if self._indexVariable:
            self.ui.indexLineEdit.text = self._indexVariable
            self.ui.indexLineEdit.readOnly = True
            self.ui.indexLineEdit.toolTip = _("Set by the environment variable {variable}, which comes before the "
                                              "panel's setting.").format(variable=INDEX_VARIABLE)
        else:
            self.ui.indexLineEdit.text = panel_index()
            self.ui.indexLineEdit.placeholderText = DEFAULT_INDEX  # what an empty field reads
        self.ui.indexLineEdit.connect("returnPressed()", self.readIndex)
        self.ui.readIndexButton.connect("clicked(bool)", lambda _checked: self.readIndex())
        self.ui.filterLineEdit.connect("textChanged(QString)", lambda _text: self._fillTable())
        self.ui.bundlesTable.connect("itemSelectionChanged()", self._listVersions)
        self.ui.versionComboBox.connect("currentIndexChanged(int)", lambda _index: self._onVersionChosen())
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
        typed = self.ui.indexLineEdit.text.strip()
        if not self._indexVariable:
            qt.QSettings().setValue(INDEX_SETTING, typed)
        index = typed or DEFAULT_INDEX
        self.ui.indexSourceLabel.text = _("Reading {index}...").format(index=index)
        self._reading = self._browser.read(index)
        self._timer.start()
        self._updateButtons()

    def selectedBundle(self):
        rows = {index.row() for index in self.ui.bundlesTable.selectionModel().selectedRows()}
        return self._rows[min(rows)] if rows else None

    def chosenVersion(self, bundle) -> str:
        version = self._versions.get(bundle.name)
        return version if version in bundle.versions else bundle.newest

    def onDownload(self) -> None:
        """The chosen version: from the cache, else downloaded first."""
        bundle = self.selectedBundle()
        if bundle is None or self.download is not None or self._reading is not None or self._listing is None:
            return  # Enter in the index field reaches here too, after it started a read
        archive = self._listing.catalogue.archive(bundle.name, self.chosenVersion(bundle))
        if archive.version in bundle.cached:
            self._use(archive, bundle_folder(archive.name, archive.version))
            return
        self.download = self._browser.download(archive)
        self.ui.statusLabel.text = _("Downloading {name} {version}...").format(name=archive.name,
                                                                              version=archive.version)
        self.ui.downloadProgressBar.setRange(0, 0)  # busy until the size is known
        self._timer.start()
        self._updateButtons()

    def onCancelDownload(self) -> None:
        if self.download is not None:
            self.download.cancel.set()  # it stops at its next chunk, or before it unpacks; the next poll says so
            self.ui.statusLabel.text = _("Cancelling the download...")

    def _poll(self) -> None:
        if self._reading is not None and self._reading.done():
            future, self._reading = self._reading, None
            self._showListing(future)
        for key, future in list(self._asking.items()):
            if future.done():
                del self._asking[key]
                self._sizes[key] = future.result()  # archive_size answers None rather than fail
                self._fillTable()
        if self.download is not None:
            self._showDownload(self.download)
        if self._reading is None and self.download is None and not self._asking:
            self._timer.stop()
        self._updateButtons()

    def _showListing(self, future) -> None:
        try:
            self._listing = future.result()
        except Exception as error:  # no index and no copy of it, or a disk that cannot keep it: nothing to choose
            self._listing = None
            self._fillTable()
            self.ui.indexSourceLabel.text = _("Cannot read the index: {error}").format(error=failure_text(error))
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

    def _size(self, name: str, version: str) -> int | None:
        return self._listing.sizes.get((name, version)) or self._sizes.get((name, version))

    def _fillTable(self) -> None:
        """The bundles that match the filter, each with its chosen version; the one selected stays selected."""
        selected = self.selectedBundle()
        table = self.ui.bundlesTable
        self._rows = matching(self._listing.bundles, self.ui.filterLineEdit.text) if self._listing else []
        table.setRowCount(len(self._rows))
        for row, bundle in enumerate(self._rows):
            version = self.chosenVersion(bundle)
            size = self._size(bundle.name, version)
            texts = {NAME: bundle.name,
                     VERSION: _("{version} (downloaded)").format(version=version) if version in bundle.cached
                     else version,
                     SIZE: size_text(size) if size is not None else "",
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
        """The selected bundle's versions in *Version*, its chosen one current; its size asked if not known."""
        combo = self.ui.versionComboBox
        bundle = self.selectedBundle()
        self._listingVersions = True
        try:
            combo.clear()
            for version in bundle.versions if bundle else []:
                combo.addItem(_("{version} (downloaded)").format(version=version) if version in bundle.cached else
                              version, version)
            if bundle is not None:
                combo.currentIndex = bundle.versions.index(self.chosenVersion(bundle))
        finally:
            self._listingVersions = False
        self._askSize()
        self._updateButtons()

    def _onVersionChosen(self) -> None:
        bundle = self.selectedBundle()
        if self._listingVersions or bundle is None or self.ui.versionComboBox.currentData is None:
            return
        self._versions[bundle.name] = self.ui.versionComboBox.currentData
        self._fillTable()
        self._askSize()
        self._updateButtons()

    def _askSize(self) -> None:
        bundle = self.selectedBundle()
        if bundle is None or self._listing is None:
            return
        key = (bundle.name, self.chosenVersion(bundle))
        if self._size(*key) is None and key not in self._sizes and key not in self._asking:
            self._asking[key] = self._browser.size(self._listing.catalogue.archive(*key))
            self._timer.start()

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
        self.ui.downloadProgressBar.value = 0
        try:
            folder = download.future.result()
        except Cancelled:
            self.ui.statusLabel.text = _("Download cancelled: nothing of it was kept.")
            return
        except Exception as error:
            self.ui.statusLabel.text = _("Download failed: {error}").format(error=failure_text(error))
            return
        if download.cancel.is_set():  # cancelled as it ended: it is in the cache now, but the user said no
            self.ui.statusLabel.text = _("Download cancelled as it ended: {name} {version} is kept in the cache, "
                                         "not used.").format(name=download.archive.name,
                                                             version=download.archive.version)
            return
        self.ui.downloadProgressBar.value = 100
        self._use(download.archive, folder)

    def _use(self, archive, folder: str) -> None:
        self._chosen(folder, archive.name, archive.version)
        self.dialog.accept()

    def _updateButtons(self) -> None:
        downloading = self.download is not None
        bundle = self.selectedBundle()
        self.ui.downloadButton.enabled = bundle is not None and not downloading and self._reading is None
        self.ui.downloadButton.text = _("Use") if bundle is not None and \
            self.chosenVersion(bundle) in bundle.cached else _("Download and use")
        self.ui.cancelDownloadButton.enabled = downloading
        for widget in (self.ui.indexLineEdit, self.ui.filterLineEdit, self.ui.bundlesTable,
                       self.ui.versionComboBox):
            widget.enabled = not downloading
        self.ui.readIndexButton.enabled = not downloading and self._reading is None

    def _onFinished(self, _result: int) -> None:
        """Closed, by Close, Escape or a choice: a download in flight stops and leaves nothing behind."""
        self._timer.stop()
        self._browser.shutdown(self.download)
        self.download = None
        self.dialog.deleteLater()
        self._closed()
