"""MONAI Deployer: run a packaged MONAI model on a volume node, get a labelmap or segmentation back.

Slicer glue only. The work happens in MonaiDeployerLib, imported inside the methods that use it:
Slicer imports every module file at start-up. Only its choices (``MonaiDeployerLib.choices``, no
numpy) are imported here.
"""

import logging
import os
import re
import shutil
import sys
import time
from typing import Annotated

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLVectorVolumeNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MonaiDeployerLib.choices import (
    APP_INPUT_FORMAT_CHOICES,
    BATCH_OUTPUT_SUFFIXES,
    CONTAINER_RUNTIME_CHOICES,
    DEVICES,
    LAUNCHES,
    MODE_CHOICES,
    OUTPUT_KINDS,
    RUN_ON,
)

MAX_RUN_TIMEOUT_S = 86400  # the .ui's spin box maximum: a day
POLL_INTERVAL_MS = 100
PACKAGE_INFO_DELAY_MS = 400  # let the user finish typing a path before the package is opened
RECENT_PACKAGES_KEY = "MonaiDeployer/RecentPackages"
RECENT_PACKAGES_KEPT = 10


#
# MonaiDeployer
#


class MonaiDeployer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MONAI Deployer")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = [_("MonaiDeployer developers")]
        self.parent.helpText = _("""
Runs a packaged MONAI model on a volume and returns the result as a labelmap volume or as a segmentation
with named, coloured segments. A package is a TorchScript file with its JSON sidecar, a MONAI Bundle,
a MONAI Deploy application or a MONAI Application Package (container image).
Inference runs in a separate worker process that stays warm between runs, so Slicer never freezes
and the model is loaded only once.
See the <a href="https://github.com/monai-deployer/SlicerMonaiDeployer">project page</a> for documentation.
""")
        self.parent.acknowledgementText = _("""
Built on <a href="https://monai.io">MONAI</a>, the MONAI Deploy App SDK and
<a href="https://pytorch.org">PyTorch</a> (installed through Slicer's PyTorch extension).
""")


#
# MonaiDeployerParameterNode
#


@parameterNodeWrapper
class MonaiDeployerParameterNode:
    """
    The parameters needed by module.

    inputVolume - The volume the model runs on (a vector volume holds several channels).
    packagePath - The model package: a file, a folder or a container image reference.
    mode - The deployment mode; "auto" detects it from the package.
    runOn - "this computer" (a worker process here) or "a server" (serverUrl runs the model; packagePath is then a
        model it serves, or the path of the same package).
    serverUrl - The server's address, for example http://gpu-server:8000.
    device - "auto", "cpu" or "cuda".
    workerPython - The worker's Python interpreter; empty means Slicer's own.
    outputKind - The kind of node created when outputNode is None.
    outputNode - An existing labelmap or segmentation to overwrite; None creates a new node on each run.
    appModelPath - MONAI Deploy apps: the model given with -m; empty means the one in the app's folder.
    appLaunch - MONAI Deploy apps and MAPs: "warm" (re-run in the worker, or in one kept container) or "cold"
        (a new process or container each run).
    appInputFormat - MONAI Deploy apps and MAPs: "auto", "nifti" or "dicom".
    containerRuntime - MAPs: "auto" (the first of podman, docker that answers), "podman" or "docker".
    madeEnvironment - Run in a virtual environment made for the package (from its metadata or requirements.txt)
        over the worker Python's packages, made on first use and reused.
    runTimeout - Seconds after which a run that has not finished is stopped; 0 means never (in a batch: each case).
    batchInputFolder - Batch: a folder of volume files or DICOM series to segment besides the checked volumes.
    batchOutputFolder - Batch: where the input folder's results are written.
    batchSuffix - Batch: the type of those files.
    """

    inputVolume: vtkMRMLScalarVolumeNode | vtkMRMLVectorVolumeNode | None  # None: the wrapper's default
    packagePath: str = ""
    mode: Annotated[str, Choice(list(MODE_CHOICES))] = "auto"
    runOn: Annotated[str, Choice(list(RUN_ON))] = RUN_ON[0]
    serverUrl: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    workerPython: str = ""
    outputKind: Annotated[str, Choice(list(OUTPUT_KINDS))] = "labelmap"
    outputNode: vtkMRMLLabelMapVolumeNode | vtkMRMLSegmentationNode | None
    appModelPath: str = ""
    appLaunch: Annotated[str, Choice(list(LAUNCHES))] = "warm"
    appInputFormat: Annotated[str, Choice(list(APP_INPUT_FORMAT_CHOICES))] = "auto"
    containerRuntime: Annotated[str, Choice(list(CONTAINER_RUNTIME_CHOICES))] = "auto"
    madeEnvironment: bool = False
    runTimeout: Annotated[int, WithinRange(0, MAX_RUN_TIMEOUT_S)] = 0
    batchInputFolder: str = ""
    batchOutputFolder: str = ""
    batchSuffix: Annotated[str, Choice(list(BATCH_OUTPUT_SUFFIXES))] = ".seg.nrrd"


#
# MonaiDeployerWidget
#


class MonaiDeployerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the panel's widgets to the library: what to run is decided in MonaiDeployerLib.panel.preflight, the info
    card is made by MonaiDeployerLib.panel.infocard off the GUI thread, and runs are polled from a timer."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._preflight = None  # made on first use: it imports the library
        self._background = None  # MonaiDeployerLib.background.PanelBackground: the card and the warm-up
        self._describedChoice = None  # the preflight.Choice the card shows
        self._job = None  # the NodeSegmentation in flight, if any
        self._batch = None  # the NodeBatch in flight, if any
        self._batchRows = []  # the rows of the results table, as nodebatch.BatchRow
        self._jobCreatesNode = False
        self._jobDeadline = None  # time.monotonic() after which the run is stopped, or None
        self._preparing = False  # Apply is asking its questions
        self._zooDialog = None  # the Model Zoo dialog, while it is open
        self.lastRunTimings = {}  # the stage timings of the last run that succeeded (the log shows them too)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MonaiDeployer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MonaiDeployerLogic()
        from MonaiDeployerLib.logs import LogLines, attach
        from MonaiDeployerLib.panel.background import PanelBackground

        self._background = PanelBackground()
        self._libraryLog = attach(LogLines(), logging.INFO)  # shown in the log by _showLibraryLog

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._onTimer)
        self._packageInfoTimer = qt.QTimer()
        self._packageInfoTimer.setSingleShot(True)
        self._packageInfoTimer.setInterval(PACKAGE_INFO_DELAY_MS)
        self._packageInfoTimer.connect("timeout()", self.updatePackageInfo)
        self._batchVolumesTimer = qt.QTimer()  # one refresh of the volume list for a burst of scene changes
        self._batchVolumesTimer.setSingleShot(True)
        self._batchVolumesTimer.setInterval(0)
        self._batchVolumesTimer.connect("timeout()", self._refreshBatchVolumes)
        self._recentPackages = qt.QStringListModel()
        self.ui.packagePathLineEdit.setCompleter(qt.QCompleter(self._recentPackages, self.ui.packagePathLineEdit))

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.madeEnvironmentsButton.connect("clicked(bool)", self.onMadeEnvironmentsButton)
        self.ui.packageZooButton.connect("clicked(bool)", lambda _checked: self.onModelZooButton())
        self.ui.batchApplyButton.connect("clicked(bool)", self.onBatchApplyButton)
        self.ui.servedModelComboBox.connect("activated(int)", self.onServedModelChosen)
        self.ui.batchResultsTable.connect("cellClicked(int,int)", self.onBatchResultClicked)
        self.ui.batchVolumesListWidget.connect("itemChanged(QListWidgetItem*)", lambda _item: self._updateButtons())
        self.ui.batchCollapsibleButton.connect("contentsCollapsed(bool)",
                                               lambda collapsed: collapsed or self._refreshBatchVolumes())
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self._onSceneNodesChanged)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self._onSceneNodesChanged)
        for button, lineEdit, folder, caption in (
                (self.ui.packageFileButton, self.ui.packagePathLineEdit, False, _("Choose a model package file")),
                (self.ui.packageFolderButton, self.ui.packagePathLineEdit, True, _("Choose a model package folder")),
                (self.ui.workerPythonFileButton, self.ui.workerPythonLineEdit, False, _("Choose the worker Python")),
                (self.ui.appModelFileButton, self.ui.appModelLineEdit, False, _("Choose the app's model file")),
                (self.ui.appModelFolderButton, self.ui.appModelLineEdit, True, _("Choose the app's model folder")),
                (self.ui.batchInputFolderButton, self.ui.batchInputFolderLineEdit, True, _("Choose the input folder")),
                (self.ui.batchOutputFolderButton, self.ui.batchOutputFolderLineEdit, True,
                 _("Choose the output folder"))):
            button.connect("clicked(bool)", lambda _checked, e=lineEdit, f=folder, c=caption: self._browse(e, f, c))

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self._timer.stop()
        self._packageInfoTimer.stop()
        self._batchVolumesTimer.stop()
        if self._zooDialog is not None:
            self._zooDialog.dialog.reject()  # a download in flight stops
        if self._job is not None:
            self._job.cancel()
            self._job = None
        if self._batch is not None:
            self._batch.cancel()
            self._batch = None
        self.logic.closeRunner()  # first: a card or warm-up waiting on the worker then ends at once
        self._background.shutdown()
        self.removeObservers()
        from MonaiDeployerLib.logs import detach

        detach(self._libraryLog)

    def enter(self) -> None:
        """Called each time the user opens this module: bind the panel and warm the worker up meanwhile."""
        self.initializeParameterNode()
        self._refreshBatchVolumes()
        self._startWarmup()

    def exit(self) -> None:
        """Called each time the user opens a different module; a run in flight goes on."""
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        """The scene's nodes are going away: stop the run or the batch."""
        if self._job is not None:
            self._job.cancel()
        if self._batch is not None:
            self._batch.cancel()
        self._batchRows = []
        self.ui.batchResultsTable.setRowCount(0)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Bind the scene's parameter node; offer the most recent package and the first volume."""
        recent = self._recentPackageList()
        self._recentPackages.setStringList(recent)
        parameterNode = self.logic.getParameterNode()
        if not parameterNode.packagePath and recent:
            parameterNode.packagePath = recent[0]
        if not parameterNode.inputVolume:
            parameterNode.inputVolume = next((node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                                              if not node.IsA("vtkMRMLLabelMapVolumeNode")), None)
        self.setParameterNode(parameterNode)

    def setParameterNode(self, inputParameterNode: MonaiDeployerParameterNode | None) -> None:
        """Set and observe the parameter node; the GUI follows it through connectGui."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Each widget that holds a parameter has a "SlicerParameterName" dynamic property in the .ui file.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p and p.outputNode is not None and p.outputKind != outputKindOf(p.outputNode):
            p.outputKind = outputKindOf(p.outputNode)  # an existing output node decides the kind
            return  # that change comes back here
        self._updateButtons()
        if p and self._choice() != self._describedChoice:
            self._packageInfoTimer.start()  # restarts the delay while the user keeps typing

    def _choice(self):
        """What the panel names, as the library takes it (also the info card's key: it is compared by value)."""
        from MonaiDeployerLib.panel.preflight import Choice
        from MonaiDeployerLib.zoo.reference import is_zoo_reference

        p = self._parameterNode
        zooIndex = ""
        if is_zoo_reference(p.packagePath.strip()):  # a Model Zoo bundle: the panel's index setting applies
            from MonaiDeployerLib.panel.zoo_dialog import panel_index

            zooIndex = panel_index()
        return Choice(p.packagePath.strip(), p.mode, p.device, p.workerPython.strip(), p.appModelPath.strip(),
                      p.appLaunch, p.appInputFormat, p.containerRuntime, p.madeEnvironment, self._serverUrl(), zooIndex)

    def _serverUrl(self) -> str:
        """The server that runs the model, or "" for this computer."""
        return self._parameterNode.serverUrl.strip() if self._onServer() else ""

    def _onServer(self) -> bool:
        return bool(self._parameterNode) and self._parameterNode.runOn == RUN_ON[1]

    def isRunning(self) -> bool:
        return self._job is not None or self._batch is not None

    def isDescribing(self) -> bool:
        """The info card is being made (or waits for the user to stop typing)."""
        return self._background.describing() or self._packageInfoTimer.isActive()

    def isWarmingUp(self) -> bool:
        """The worker is starting and importing torch and MONAI in the background."""
        return self._background.warming_up

    def _updateButtons(self) -> None:
        busy = self.isRunning() or self._preparing
        p = self._parameterNode
        for section in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton,
                        self.ui.advancedCollapsibleButton):
            section.enabled = not busy
        for widget in (self.ui.batchVolumesListWidget, self.ui.batchInputFolderLineEdit,
                       self.ui.batchInputFolderButton, self.ui.batchOutputFolderLineEdit,
                       self.ui.batchOutputFolderButton, self.ui.batchSuffixComboBox):
            widget.enabled = not busy
        self.ui.outputKindComboBox.enabled = bool(p) and p.outputNode is None
        for widget in (self.ui.serverUrlLabel, self.ui.serverUrlLineEdit, self.ui.servedModelLabel,
                       self.ui.servedModelComboBox):
            widget.visible = self._onServer()
        self.ui.cancelButton.enabled = self.isRunning()
        if busy:
            self.ui.applyButton.enabled = self.ui.batchApplyButton.enabled = False
            self.ui.applyButton.toolTip = _("A model is running; wait for it or cancel it.")
            return
        if self._onServer() and not self._serverUrl():
            self.ui.applyButton.enabled = self.ui.batchApplyButton.enabled = False
            self.ui.applyButton.toolTip = _("Enter the server's address.")
            return
        if p and p.inputVolume and p.packagePath.strip():
            self.ui.applyButton.enabled = True
            self.ui.applyButton.toolTip = _("Run the model on the input volume.")
        else:
            self.ui.applyButton.enabled = False
            self.ui.applyButton.toolTip = _("Choose an input volume and a model package.")
        folder = p.batchInputFolder.strip() if p else ""
        self.ui.batchApplyButton.enabled = bool(p and p.packagePath.strip() and (self.checkedBatchVolumes() or folder)
                                                and (not folder or p.batchOutputFolder.strip()))

    def _browse(self, lineEdit, folder: bool, caption: str) -> None:
        """File... and Folder...: what is chosen goes into the field, and from there into the parameter node."""
        current = lineEdit.text.strip()
        start = current if os.path.isdir(current) else os.path.dirname(current)
        if folder:
            chosen = qt.QFileDialog.getExistingDirectory(self.parent, caption, start)
        else:
            chosen = qt.QFileDialog.getOpenFileName(self.parent, caption, start)
            chosen = chosen[0] if isinstance(chosen, tuple) else chosen  # PySide returns (path, filter)
        if chosen:
            lineEdit.text = chosen

    def onModelZooButton(self) -> None:
        """Model Zoo...: the catalogue in a dialog; the version chosen there (downloaded first) becomes the package."""
        if self._zooDialog is not None:
            self._zooDialog.dialog.raise_()
            return
        from MonaiDeployerLib.panel.zoo_dialog import ModelZooDialog

        self._zooDialog = ModelZooDialog(self.resourcePath("UI/ModelZooDialog.ui"), self._useZooBundle,
                                         self._onZooDialogClosed, self.parent)
        self._zooDialog.open()

    def _useZooBundle(self, folder: str, name: str, version: str) -> None:
        self._appendLog(_("Model Zoo: {name} {version}, kept in {folder}.").format(name=name, version=version,
                                                                                  folder=folder))
        if self._parameterNode:
            self._parameterNode.mode = "auto"
            self._parameterNode.packagePath = folder  # the card shows its licence; Apply asks for trust

    def _onZooDialogClosed(self) -> None:
        self._zooDialog = None

    @staticmethod
    def _recentPackageList() -> list:
        stored = qt.QSettings().value(RECENT_PACKAGES_KEY) or []
        return [path for path in ([stored] if isinstance(stored, str) else stored) if path]  # one path reads as str

    def _rememberPackage(self, path: str) -> None:
        recent = [path] + [other for other in self._recentPackageList() if other != path]
        qt.QSettings().setValue(RECENT_PACKAGES_KEY, recent[:RECENT_PACKAGES_KEPT])
        self._recentPackages.setStringList(recent[:RECENT_PACKAGES_KEPT])

    #
    # Work off the GUI thread: the info card and the worker's warm-up
    #

    def updatePackageInfo(self) -> None:
        """Start making the card of the chosen package; it is shown when ready (problems in the card, no dialogs)."""
        if not self._parameterNode or self.isRunning():
            return  # a run in flight holds the worker; the card is refreshed when it ends
        choice = self._choice()
        if choice == self._describedChoice or self._background.describing(choice):
            return
        from MonaiDeployerLib import MonaiDeployerError
        from MonaiDeployerLib.panel.infocard import message_html

        if not choice.server_url and (self._onServer() or not choice.package_path):
            self._describedChoice = choice
            self.ui.packageInfoBrowser.setHtml(message_html(_("Enter the server's address."), "")) \
                if self._onServer() else self.ui.packageInfoBrowser.clear()
            return
        try:
            runner = self._runnerFor(choice)
        except MonaiDeployerError as error:  # a server address that is not one
            self._describedChoice = choice
            self.ui.packageInfoBrowser.setHtml(message_html(_("The server cannot be used."), str(error)))
            return
        self.ui.packageInfoBrowser.setHtml(message_html(_("Asking the server...") if choice.server_url else
                                                        _("Reading the package..."),
                                                        choice.server_url or choice.package_path))
        self._background.describe(choice, runner, self._ensurePreflight().is_trusted)
        self._timer.start()

    def _showCard(self, choice, card) -> None:
        if not self._parameterNode:
            return  # the user left the module or closed the scene meanwhile
        if choice != self._choice():
            self._onParameterNodeModified()  # the choice changed meanwhile: make the card again
            return
        self._describedChoice = choice
        self.ui.packageInfoBrowser.setHtml(card.html(_))
        if card.served_models is not None:
            self._listServedModels(card.served_models, card.served)
        if card.package is not None:
            self._rememberPackage(choice.package_path)
            self._preferSegmentationForOverlaps(card.package)

    def _listServedModels(self, models: list, chosen) -> None:
        """The server's models in the combo box, the chosen one (if any) current."""
        combo = self.ui.servedModelComboBox
        combo.clear()
        for model in models:
            combo.addItem(f"{model['name']} {model.get('version', '')} ({model['mode']})", model["model"])
        combo.setCurrentIndex(next((index for index, model in enumerate(models)
                                    if chosen is not None and model["model"] == chosen.model), -1))

    def onServedModelChosen(self, index: int) -> None:
        """A served model chosen in the list is the package the server runs."""
        if index >= 0 and self._parameterNode:
            self._parameterNode.packagePath = self.ui.servedModelComboBox.itemData(index)

    def _runnerFor(self, choice):
        """The runner of a choice: the worker here, or the server's."""
        if choice.server_url:
            return self.logic.remoteRunner(choice.server_url)
        return self.logic.runner(choice.worker_python, choice.device)

    def _preferSegmentationForOverlaps(self, package) -> None:
        """A labelmap holds one label per voxel: for a model whose segments overlap, make a segmentation instead."""
        p = self._parameterNode
        if package.outputs_overlap and p.outputNode is None and p.outputKind == "labelmap":
            p.outputKind = "segmentation"
            self._appendLog(_("{package}'s segments can overlap: the output will be a segmentation, "
                              "one segment per channel.").format(package=package.name))

    def _startWarmup(self) -> None:
        """Start the worker and import torch and MONAI in it now, so the first Apply pays for the model only."""
        if self.isRunning() or not self._parameterNode or self._onServer():
            return  # a server's workers are warm already
        self._background.start_warmup(self.logic.runner(self._parameterNode.workerPython,
                                                        self._parameterNode.device))
        self._timer.start()

    #
    # Running
    #

    def onApplyButton(self) -> None:
        """Ask what must be asked, then start the run; the timer follows it, so the GUI never waits on the model."""
        p = self._parameterNode
        self._appendLog(_("Running {package} on {volume}.").format(
            package=p.packagePath, volume=p.inputVolume.GetName()))

        def start(ready):
            self._jobCreatesNode = p.outputNode is None
            self._jobDeadline = time.monotonic() + p.runTimeout if p.runTimeout > 0 else None
            self._job = self.logic.start(p.inputVolume, ready.package, p.outputNode, p.outputKind, p.device,
                                         ready.python, server=self._serverUrl())

        self._startWith(start)

    def onBatchApplyButton(self) -> None:
        """The same questions as Apply, then the checked volumes and the input folder's files, case after case."""
        p = self._parameterNode
        nodes = self.checkedBatchVolumes()
        folder = p.batchInputFolder.strip()
        self._appendLog(_("Batch of {package}: scene volumes checked: {count}; input folder: {folder}.").format(
            package=p.packagePath, count=len(nodes), folder=folder or _("none")))
        self._batchRows = []
        self.ui.batchResultsTable.setRowCount(0)

        def start(ready):
            self._batch = self.logic.startBatch(nodes, ready.package, folder, p.batchOutputFolder.strip(),
                                                p.batchSuffix, p.outputKind, p.device, ready.python,
                                                timeout=p.runTimeout or None, server=self._serverUrl())

        self._startWith(start)

    def _startWith(self, start) -> None:
        """Ask what must be asked (Preflight), then ``start(ready)``; the timer follows what it started."""
        from MonaiDeployerLib import MonaiDeployerError
        from MonaiDeployerLib.panel.preflight import NotStarted

        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.value = 0
        self._preparing = True
        self._updateButtons()
        started = False
        # Expected failures (a bad package, a worker that cannot start) go to the status line;
        # anything else is a bug, shown with its traceback.
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not start the model.")):
                try:
                    ready = self._ready(self._choice())
                    self._background.drop_warmup()  # the run's polling takes the worker's messages from here on
                    self._preferSegmentationForOverlaps(ready.package)  # the card may not have been shown yet
                    start(ready)
                    started = True
                except NotStarted as reason:
                    if reason.failed:  # something is missing: the log says more
                        self._reportFailure(str(reason))
                    else:  # the user said no
                        self._setStatus(str(reason))
                except MonaiDeployerError as error:
                    self._reportFailure(str(error))
        finally:
            self._preparing = False
            self._updateButtons()
        if started:
            self._setStatus(_("Started."), log=False)
            self._timer.start()

    def _ready(self, choice):
        """What to start: on a server, its model (trust, environment and installs are the server's); here, what
        Preflight decided after asking what must be asked."""
        from MonaiDeployerLib.panel.preflight import Ready

        if choice.server_url:
            with slicer.util.WaitCursor():
                return Ready(self.logic.remoteRunner(choice.server_url).ready(choice.package_path), "")
        return self._ensurePreflight().prepare(choice, PanelQuestions())

    def _ensurePreflight(self):
        if self._preflight is None:
            from MonaiDeployerLib.environment.made import make_environment
            from MonaiDeployerLib.packages.trust import TrustList
            from MonaiDeployerLib.panel.preflight import Preflight

            self._preflight = Preflight(self.logic.runner, self.logic.defaultPython(), self._install, TrustList(),
                                        make_environment, self._logWhilePreparing, _, slicer.util.WaitCursor)
        return self._preflight

    def _logWhilePreparing(self, line: str) -> None:
        self._appendLog(line)
        slicer.app.processEvents()  # making an environment takes minutes: keep the log moving

    def _install(self, packages: list) -> None:
        """Install into Slicer's Python (the user has agreed), then restart the worker so it sees them."""
        from MonaiDeployerLib.environment.made import needs_restart

        with slicer.util.WaitCursor():
            self.logic.installIntoSlicerPython(packages)
        self.logic.closeRunner()
        loaded = needs_restart(packages, sys.modules)
        if loaded:
            slicer.util.infoDisplay(_("{packages} were already loaded in Slicer: restart Slicer before other "
                                      "modules use the new versions (the model's own worker uses them now)."
                                      ).format(packages=", ".join(loaded)), windowTitle=_("MONAI Deployer"))

    def onMadeEnvironmentsButton(self) -> None:
        """List the made environments with their disk use; remove the one the user picks."""
        from MonaiDeployerLib.environment.made import list_environments, remove_environment

        found = list_environments()
        if not found:
            slicer.util.infoDisplay(_("No environment has been made yet."), windowTitle=_("MONAI Deployer"))
            return
        items = [_("{name} ({size:.0f} MiB): {requirements}").format(
            name=made.name, size=made.disk_bytes() / 2**20,
            requirements=" ".join(made.requirements) if made.ready else _("half-made")) for made in found]
        chosen = qt.QInputDialog.getItem(self.parent, _("Made environments"), _("Remove this environment:"), items,
                                         0, False)
        chosen = chosen[0] if isinstance(chosen, tuple) else chosen  # PySide returns (item, ok)
        # Qt answers Cancel with the first item's text: removing always asks again.
        if chosen in items and slicer.util.confirmOkCancelDisplay(
                _("Remove {item}?").format(item=chosen), windowTitle=_("MONAI Deployer")):
            name = found[items.index(chosen)].name
            remove_environment(name)
            self._appendLog(_("Removed the environment {name}.").format(name=name))

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._setStatus(_("Cancelling..."), log=False)
            self._job.cancel()  # the next poll reports the outcome
        if self._batch is not None:
            self._setStatus(_("Cancelling..."), log=False)
            self._batch.cancel()

    def _onTimer(self) -> None:
        self._showLibraryLog()
        finished = self._background.finished_card()
        if finished is not None:
            self._showCard(*finished)
        self._background.poll_warmup()
        if self._job is not None:
            self._pollJob(self._job)
        if self._batch is not None:
            self._pollBatch(self._batch)
        if not self._background.busy and not self.isRunning():
            self._timer.stop()

    def _polled(self, poll, work) -> bool:
        """``poll()``, or, when it fails (a bug), ``work`` (the run or the batch) stopped and the failure reported:
        a broken run must not leave the timer firing forever. False when it failed."""
        try:
            poll()
            return True
        except Exception as error:
            logging.exception("Polling the run failed")
            work.cancel()
            self._job = self._batch = None  # one of them ran
            self._reportFailure(str(error))
            self._updateButtons()
            return False

    def _pollJob(self, job) -> None:
        def showEvents():
            for event in job.poll():
                self._showEvent(event)

        if not self._polled(showEvents, job):
            return
        if not job.done and self._jobDeadline is not None and time.monotonic() > self._jobDeadline:
            job.cancel()  # the worker and everything it started stop; the next poll reports it
            self._appendLog(_("No result after {seconds} s (the time-out in Advanced): the run was stopped.").format(
                seconds=self._parameterNode.runTimeout if self._parameterNode else "?"))
            self._jobDeadline = None
        if job.done:
            self._onJobDone(job)

    def _showEvent(self, event) -> None:
        if event.kind == "progress":
            if event.fraction is None:
                self.ui.progressBar.setRange(0, 0)  # busy indicator
            else:
                self.ui.progressBar.setRange(0, 100)
                self.ui.progressBar.value = round(100 * event.fraction)
            self.ui.stageLabel.text = f"{event.stage}: {event.message}" if event.message else event.stage
        elif event.kind == "log":
            self._appendLog(f"[{event.stage}] {event.message}" if event.stage else event.message)

    def _onJobDone(self, job) -> None:
        from MonaiDeployerLib.errors import Cancelled

        self._job = None
        self.ui.progressBar.setRange(0, 100)
        if job.error is None:
            self.ui.progressBar.value = 100
            showResult(job.input_node, job.output_node)
            for note in job.run_result.notes:
                self._appendLog(note)
            self.lastRunTimings = dict(job.timings)
            for stage, seconds in job.timings.items():
                self._appendLog(_("{stage}: {seconds:.2f} s").format(stage=stage, seconds=seconds))
            message = _("Created {node}.") if self._jobCreatesNode else _("Updated {node}.")
            self._setStatus(message.format(node=job.output_node.GetName()))
        elif isinstance(job.error, Cancelled):
            self.ui.progressBar.value = 0
            self._setStatus(_("Cancelled; the scene is unchanged."))
        else:
            self.ui.progressBar.value = 0
            self._reportFailure(str(job.error))
        self._updateButtons()
        if self._parameterNode:
            self._onParameterNodeModified()  # the card may have been left stale while the run held the worker

    #
    # Batches
    #

    def _onSceneNodesChanged(self, caller=None, event=None) -> None:
        if self.parent.isEntered:
            self._batchVolumesTimer.start()

    def _refreshBatchVolumes(self) -> None:
        """One checkable item per volume of the scene (labelmaps left out); checks survive a refresh."""
        listWidget = self.ui.batchVolumesListWidget
        checked = {node.GetID() for node in self.checkedBatchVolumes()}
        listWidget.blockSignals(True)
        listWidget.clear()
        for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if node.IsA("vtkMRMLLabelMapVolumeNode"):
                continue
            item = qt.QListWidgetItem(node.GetName())
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked if node.GetID() in checked else qt.Qt.Unchecked)
            item.setData(qt.Qt.UserRole, node.GetID())
            listWidget.addItem(item)
        listWidget.blockSignals(False)
        self._updateButtons()

    def checkedBatchVolumes(self) -> list:
        listWidget = self.ui.batchVolumesListWidget
        items = [listWidget.item(row) for row in range(listWidget.count)]
        nodes = [slicer.mrmlScene.GetNodeByID(item.data(qt.Qt.UserRole)) for item in items
                 if item.checkState() == qt.Qt.Checked]
        return [node for node in nodes if node is not None]

    def _pollBatch(self, batch) -> None:
        def addRows():
            for row in batch.poll(self._showBatchEvent):
                self._addBatchRow(row)

        if not self._polled(addRows, batch):
            return
        self.ui.progressBar.setRange(0, batch.total)
        self.ui.progressBar.value = len(batch.rows)
        if batch.done:
            self._onBatchDone(batch)
            return
        running = batch.in_flight()
        if running:
            case, stage = running[0][:2]
            self.ui.stageLabel.text = _("Case {number} of {total}, {case}: {stage}").format(
                number=len(batch.rows) + 1, total=batch.total, case=case.name, stage=stage)

    def _showBatchEvent(self, case, event) -> None:
        if event.kind == "log":
            self._appendLog(f"[{case.name}: {event.stage}] {event.message}" if event.stage else event.message)

    def _addBatchRow(self, row) -> None:
        table = self.ui.batchResultsTable
        index = table.rowCount
        table.insertRow(index)
        status = _("done") if row.ok else _("failed")
        for column, text in enumerate((row.case.name, status, f"{row.seconds:.1f}")):
            item = qt.QTableWidgetItem(text)
            item.setToolTip(row.message)
            table.setItem(index, column, item)
        self._batchRows.append(row)
        for note in row.notes:
            self._appendLog(note)
        if row.ok:
            self._appendLog(_("{case}: done in {seconds:.1f} s: {made}").format(
                case=row.case.name, seconds=row.seconds, made=row.message))
        else:
            self._appendLog(_("{case}: failed: {reason}").format(case=row.case.name, reason=row.message))

    def _onBatchDone(self, batch) -> None:
        self._batch = None
        done = sum(row.ok for row in batch.rows)
        failed = len(batch.rows) - done
        if batch.cancelled:
            self._setStatus(_("Cancelled after {finished} of {total} cases; the finished ones are kept.").format(
                finished=len(batch.rows), total=batch.total))
        elif failed:
            self._setStatus(_("{failed} of {total} cases failed ({done} done); the log says why.").format(
                failed=failed, total=batch.total, done=done))
            self.ui.logCollapsibleButton.collapsed = False
        else:
            self._setStatus(_("All {total} cases done.").format(total=batch.total))
        self._updateButtons()
        if self._parameterNode:
            self._onParameterNodeModified()  # the card may have been left stale while the batch held the worker

    def onBatchResultClicked(self, rowIndex: int, column: int = 0) -> None:
        """Show a finished case's result over its input; a file's case is loaded into the scene first."""
        if not 0 <= rowIndex < len(self._batchRows):
            return
        row = self._batchRows[rowIndex]
        if not row.ok:
            self._setStatus(_("{case} failed: {reason}").format(case=row.case.name, reason=row.message))
            return
        if not row.outputs and (row.output_node is None or row.output_node.GetScene() is None
                                or row.input_node.GetScene() is None):
            self._setStatus(_("The result of {case} was removed from the scene.").format(case=row.case.name))
            return
        with slicer.util.tryWithErrorDisplay(_("Could not show the result.")):
            if row.output_node is None or row.output_node.GetScene() is None:
                self.logic.loadBatchResult(row, self._parameterNode.outputKind)
            showResult(row.input_node, row.output_node)

    def _reportFailure(self, message: str) -> None:
        self._setStatus(_("Failed: {message}").format(message=message))
        self.ui.logCollapsibleButton.collapsed = False

    def _setStatus(self, text: str, log: bool = True) -> None:
        self.ui.stageLabel.text = text
        if log:
            self._appendLog(text)

    def _appendLog(self, line: str) -> None:
        self._showLibraryLog()
        self.ui.logTextEdit.appendPlainText(line)

    def _showLibraryLog(self) -> None:
        """What the library logged (from any thread) since the last time, in order."""
        for line in self._libraryLog.drain():
            self.ui.logTextEdit.appendPlainText(line)


class PanelQuestions:
    """The questions before a run, as Slicer's dialogs (in testing mode Slicer answers them yes, and nothing is
    installed from the network)."""

    def trust(self, package) -> bool:
        licence = _("\n\nIts licence: {licence}").format(licence=package.settings.licence) \
            if package.settings.licence else ""
        return slicer.util.confirmYesNoDisplay(
            _("{package} is a {mode} package: its configs or code are Python that will run on this computer with "
              "your permissions. Run it only if you trust where it came from.{licence}\n\nTrust and run {package}?"
              ).format(package=package.name, mode=package.mode, licence=licence),
            windowTitle=_("MONAI Deployer: trust this package?"))

    def run_entry_point(self, reason: str) -> bool:
        return slicer.util.confirmYesNoDisplay(
            _("{error}\n\nRun the image's own entry point anyway?").format(error=reason),
            windowTitle=_("MONAI Deployer: not a MAP"))

    def install(self, packages) -> bool:
        if slicer.app.testingEnabled():
            logging.info("Testing mode: %s not installed", ", ".join(packages))
            return False
        return slicer.util.confirmOkCancelDisplay(
            _("The model needs {packages}, which Slicer's Python does not have. Install now? This downloads them from "
              "the Python Package Index and can take a few minutes; packages Slicer ships are kept as they are."
              ).format(packages=", ".join(packages)), windowTitle=_("MONAI Deployer"))

    def run_anyway(self, package, problems) -> bool:
        return slicer.util.confirmOkCancelDisplay(
            _("The worker's Python environment does not meet the requirements of {package}:\n\n{problems}\n\n"
              "Run it anyway?").format(package=package.name, problems="\n".join(problems)),
            windowTitle=_("MONAI Deployer"))


def outputKindOf(node) -> str:
    return "segmentation" if node.IsA("vtkMRMLSegmentationNode") else "labelmap"


def showResult(inputVolume, outputNode) -> None:
    """Show the result over its input in the slice views."""
    if outputNode.IsA("vtkMRMLLabelMapVolumeNode"):
        slicer.util.setSliceViewerLayers(background=inputVolume, label=outputNode)
    else:
        outputNode.CreateDefaultDisplayNodes()
        slicer.util.setSliceViewerLayers(background=inputVolume)


def isTorch(requirement: str) -> bool:
    """True for "torch" or a torch requirement such as "torch>=2.4" (installed by the PyTorch extension)."""
    from MonaiDeployerLib.environment.requirements import normalise_name

    return normalise_name(re.split(r"[<>=!~\s]", requirement)[0]) == "torch"


#
# MonaiDeployerLogic
#


class MonaiDeployerLogic(ScriptedLoadableModuleLogic):
    """Runs packages on volume nodes; usable without the widget, e.g. from the Python console:

        logic = slicer.util.getModuleLogic("MonaiDeployer")
        segmentation = logic.process(volumeNode, "/path/to/model.ts", outputKind="segmentation")
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._runner = None
        self._runnerPython = None
        self._remoteRunner = None

    def getParameterNode(self):
        return MonaiDeployerParameterNode(super().getParameterNode())

    @staticmethod
    def defaultPython() -> str:
        """Slicer's own interpreter; inside Slicer ``sys.executable`` may be the application itself."""
        return shutil.which("PythonSlicer") or sys.executable

    def runner(self, python: str | None = None, device: str = "auto"):
        """The warm worker for this interpreter (a new one when it changes), set to run on ``device``: the worker
        itself does not depend on the device, so changing it keeps the worker and its loaded models."""
        from MonaiDeployerLib import Runner

        python = (python or "").strip() or self.defaultPython()
        if self._runner is None or self._runnerPython != python:
            self.closeRunner()
            self._runner = Runner(python=python, device=device)
            self._runnerPython = python
        self._runner.device = device
        return self._runner

    def remoteRunner(self, url: str):
        """The runner of the server at ``url`` (a new one when it changes)."""
        from MonaiDeployerLib.serving.remote_runner import RemoteRunner

        if self._remoteRunner is None or self._remoteRunner.server.url != RemoteRunner(url).server.url:
            if self._remoteRunner is not None:
                self._remoteRunner.close()
            self._remoteRunner = RemoteRunner(url)
        return self._remoteRunner

    def closeRunner(self) -> None:
        for runner in (self._runner, self._remoteRunner):
            if runner is not None:
                runner.close()
        self._runner = self._remoteRunner = None
        self._runnerPython = None

    def installIntoSlicerPython(self, requirements: list) -> None:
        """torch through the PyTorch extension's PyTorchUtils; the rest with pip, constrained to keep every package
        Slicer ships at its installed version. Raises when either fails."""
        from MonaiDeployerLib.environment.made import shipped_constraints
        from MonaiDeployerLib.environment.requirements import installed_packages

        if any(map(isTorch, requirements)):
            try:
                import PyTorchUtils
            except ImportError as error:
                raise RuntimeError(_("PyTorch is not installed: install the PyTorch extension from the "
                                     "Extensions Manager, restart Slicer and try again.")) from error
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
                raise RuntimeError(_("the PyTorch extension did not install torch"))
        others = [requirement for requirement in requirements if not isTorch(requirement)]
        if not others:
            return
        import tempfile

        with tempfile.TemporaryDirectory(prefix="MonaiDeployer-") as folder:
            constraints = os.path.join(folder, "keep-slicer-packages.txt")
            with open(constraints, "w", encoding="utf-8") as stream:
                stream.write(shipped_constraints(installed_packages()))
            slicer.util.pip_install([*others, "--constraint", constraints])

    def start(self, inputVolume, package, outputNode=None, outputKind="labelmap", device="auto", python=None,
              trust=False, server=""):
        """Start a run and return its NodeSegmentation at once: poll it, or wait for it.

        A bundle or Deploy app runs code: unless the user trusted it before, pass trust=True. ``server``: the URL of
        a server that runs it (``package``: a model it serves, or the path of the same package).
        """
        from MonaiDeployerLib.scene.noderun import NodeSegmentation

        return NodeSegmentation(self._runnerOn(server, python, device), package, inputVolume, output_node=outputNode,
                                output_kind=outputKind, trust=trust, dicom_files=self.dicomFilesOf(inputVolume))

    def startBatch(self, inputVolumes, package, folder="", outputFolder="", suffix=".seg.nrrd", outputKind="labelmap",
                   device="auto", python=None, trust=False, timeout=None, server=""):
        """Start a batch over volume nodes (results: nodes beside them) and a folder's files (results: files in
        ``outputFolder``) and return its NodeBatch at once: poll it until ``done``."""
        from MonaiDeployerLib import OutputError
        from MonaiDeployerLib.runs.case_outputs import CaseOutputs
        from MonaiDeployerLib.scene.nodebatch import NodeBatch

        if folder and not outputFolder:
            raise OutputError(_("choose an output folder for the results of the input folder's files"))
        outputs = CaseOutputs(outputFolder, suffix) if folder else None
        return NodeBatch(self._runnerOn(server, python, device), package, inputVolumes, folder, outputs, outputKind,
                         trust, timeout, self.dicomFilesOf)

    def _runnerOn(self, server: str, python, device: str):
        return self.remoteRunner(server) if server else self.runner(python, device)

    @staticmethod
    def loadBatchResult(row, outputKind="labelmap") -> None:
        """A file case's input and result into the scene (``row.input_node``, ``row.output_node``)."""
        from MonaiDeployerLib.scene.nodebatch import load_row

        load_row(slicer.mrmlScene, row, outputKind)

    def process(self, inputVolume, packagePath, mode=None, outputNode=None, outputKind="labelmap", device="auto",
                python=None, trust=False):
        """Run a package on a volume node and return the output node (blocks; raises MonaiDeployerError)."""
        from MonaiDeployerLib.panel.preflight import Choice

        package = Choice(packagePath, mode or "auto").open()
        return self.start(inputVolume, package, outputNode, outputKind, device, python, trust).wait()

    @staticmethod
    def dicomFilesOf(volumeNode) -> list:
        """The DICOM files a volume was loaded from (Slicer's DICOM database), or [] for any other volume.

        A Deploy app that reads DICOM gets these originals rather than a series written from the voxels.
        """
        if isinstance(volumeNode, (list, tuple)):
            return []
        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
        database = getattr(slicer, "dicomDatabase", None)
        if not uids or database is None:
            return []
        files = [database.fileForInstance(uid) for uid in uids]
        return files if all(files) else []


#
# MonaiDeployerTest
#


class MonaiDeployerTest(ScriptedLoadableModuleTest):
    """The library's shared scenarios, then the panel driven as a user would. Both run the sample TorchScript
    model, so they skip, saying why, where Slicer's Python has no torch or MONAI (as on Slicer's build machines)."""

    def setUp(self):
        import importlib.util

        missing = [name for name in ("torch", "monai") if importlib.util.find_spec(name) is None]
        if missing:
            self.skipTest(_("{packages} not installed in Slicer's Python: the self-test runs the sample model, which "
                            "needs torch (PyTorch extension) and MONAI").format(packages=" and ".join(missing)))
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_Scenarios()
        self.setUp()
        self.test_Panel()

    def test_Scenarios(self):
        from MonaiDeployerLib.testing import selftest

        logic = MonaiDeployerLogic()
        try:
            selftest.run_all(slicer.mrmlScene, logic.runner(), log=self.delayDisplay)
        finally:
            logic.closeRunner()

    def test_Panel(self):
        """Pick the sample model and a phantom in the panel, Apply, wait without blocking, check the result."""
        from MonaiDeployerLib.testing import sampledata, selftest

        case = sampledata.held_out_cases()[0]
        inputVolume, _truth = selftest.held_out_node(slicer.mrmlScene, case)
        widget = slicer.util.getModuleWidget("MonaiDeployer")
        widget.initializeParameterNode()
        parameters = widget.logic.getParameterNode()
        parameters.inputVolume = inputVolume
        parameters.packagePath = os.path.join(os.path.dirname(__file__), "Resources", "SampleModels",
                                              "PhantomUNet.ts")
        parameters.mode = "auto"
        parameters.outputNode = None
        parameters.outputKind = "segmentation"
        widget.updatePackageInfo()
        self._waitFor(lambda: "Phantom organ and lesion" in widget.ui.packageInfoBrowser.toPlainText(), "the info card")
        self.assertTrue(widget.ui.applyButton.enabled)

        widget.ui.applyButton.click()
        self._waitFor(lambda: not widget.isRunning(), "the run")
        segmentations = slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
        self.assertEqual(len(segmentations), 1, widget.ui.stageLabel.text)
        segmentation = segmentations[0].GetSegmentation()
        names = {segmentation.GetNthSegment(index).GetName() for index in range(segmentation.GetNumberOfSegments())}
        self.assertEqual(names, set(sampledata.LABELS.values()))
        self.assertTrue(widget.ui.applyButton.enabled)
        self.delayDisplay("Panel test passed")

    def _waitFor(self, condition, what: str, seconds: float = 600) -> None:
        """Let Slicer's event loop run (the panel's timers deliver the work) until ``condition()`` holds."""
        deadline = time.monotonic() + seconds
        while not condition():
            self.assertLess(time.monotonic(), deadline, f"{what} did not finish in {seconds:.0f} s")
            slicer.app.processEvents()
            time.sleep(0.02)
