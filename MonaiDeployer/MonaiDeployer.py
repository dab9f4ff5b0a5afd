"""MONAI Deployer: run a packaged MONAI model on a volume node, get a labelmap or segmentation back.

Slicer glue only. The work happens in MonaiDeployerLib, which is imported inside the methods that
use it: Slicer imports every module file at start-up, and the library pulls in numpy.
"""

import html
import logging
import os
import re
import shutil
import sys
import time
from typing import Annotated

import ctk
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
from slicer.parameterNodeWrapper import (
    Choice,
    GuiConnector,
    Minimum,
    parameterNodeGuiConnector,
    parameterNodeWrapper,
    unannotatedType,
)
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# "auto" lets the package decide; the rest are MonaiDeployerLib.packages.MODES (a test keeps them equal).
MODE_CHOICES = ("auto", "torchscript", "bundle", "deploy", "map")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
OUTPUT_KIND_CHOICES = ("labelmap", "segmentation")
APP_LAUNCH_CHOICES = ("warm", "cold")
APP_INPUT_FORMAT_CHOICES = ("auto", "nifti", "dicom")
CONTAINER_RUNTIME_CHOICES = ("auto", "podman", "docker")
# What the worker needs to run a package of each mode; a MAP brings its own environment in its image.
WORKER_PACKAGES = {"torchscript": ("torch", "monai"), "bundle": ("torch", "monai")}  # a Deploy app or MAP: its own
POLL_INTERVAL_MS = 100
PACKAGE_INFO_DELAY_MS = 400  # let the user finish typing a path before the package is opened


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
    runTimeout - Seconds after which a run that has not finished is stopped; 0 means never.
    """

    inputVolume: vtkMRMLScalarVolumeNode | vtkMRMLVectorVolumeNode
    packagePath: str = ""
    mode: Annotated[str, Choice(list(MODE_CHOICES))] = "auto"
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = "auto"
    workerPython: str = ""
    outputKind: Annotated[str, Choice(list(OUTPUT_KIND_CHOICES))] = "labelmap"
    outputNode: vtkMRMLLabelMapVolumeNode | vtkMRMLSegmentationNode | None
    appModelPath: str = ""
    appLaunch: Annotated[str, Choice(list(APP_LAUNCH_CHOICES))] = "warm"
    appInputFormat: Annotated[str, Choice(list(APP_INPUT_FORMAT_CHOICES))] = "auto"
    containerRuntime: Annotated[str, Choice(list(CONTAINER_RUNTIME_CHOICES))] = "auto"
    madeEnvironment: bool = False
    runTimeout: Annotated[int, Minimum(0)] = 0


@parameterNodeGuiConnector
class PathLineEditToStrConnector(GuiConnector):
    """Binds a ctkPathLineEdit to a ``str`` parameter.

    Slicer binds ctkPathLineEdit to pathlib types only, and an unset pathlib.Path reads back as ".",
    which an empty field would then show. Here an unset path stays an empty string.
    """

    @staticmethod
    def canRepresent(widget, datatype) -> bool:
        return isinstance(widget, ctk.ctkPathLineEdit) and unannotatedType(datatype) is str

    @staticmethod
    def create(widget, datatype):
        if PathLineEditToStrConnector.canRepresent(widget, datatype):
            return PathLineEditToStrConnector(widget)
        return None

    def __init__(self, widget):
        super().__init__()
        self._widget = widget

    def _connect(self):
        self._widget.currentPathChanged.connect(self.changed)

    def _disconnect(self):
        self._widget.currentPathChanged.disconnect(self.changed)

    def widget(self):
        return self._widget

    def read(self):
        return self._widget.currentPath

    def write(self, value) -> None:
        if value != self._widget.currentPath:  # rewriting the same text would move the cursor while typing
            self._widget.currentPath = value


#
# MonaiDeployerWidget
#


class MonaiDeployerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent=None) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None  # the NodeSegmentation in flight, if any
        self._jobCreatesNode = False
        self._jobDeadline = None  # time.monotonic() after which the run is stopped, or None
        self._describedPackage = None  # (path, mode, python, device) that the info card shows
        self._pollTimer = None
        self._packageInfoTimer = None
        self._declinedInstalls = set()  # what the user said no to installing, this session: asked once

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MonaiDeployer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MonaiDeployerLogic()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self._onPollTimer)
        self._packageInfoTimer = qt.QTimer()
        self._packageInfoTimer.setSingleShot(True)
        self._packageInfoTimer.setInterval(PACKAGE_INFO_DELAY_MS)
        self._packageInfoTimer.connect("timeout()", self.updatePackageInfo)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.packageFolderButton.connect("clicked(bool)", self.onPackageFolderButton)
        self.ui.madeEnvironmentsButton.connect("clicked(bool)", self.onMadeEnvironmentsButton)
        self.ui.outputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOutputNodeChanged)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self._pollTimer.stop()
        self._packageInfoTimer.stop()
        if self._job is not None:
            self._job.cancel()
            self._job = None
        self.logic.closeRunner()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module; a run in flight goes on."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed: its nodes are going away, so stop the run."""
        if self._job is not None:
            self._job.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Ensure parameter node exists and observed."""
        parameterNode = self.logic.getParameterNode()
        if not parameterNode.packagePath:
            # The path field offers the most recently used package (its history); keep that choice.
            parameterNode.packagePath = self.ui.packagePathLineEdit.currentPath
        self.setParameterNode(parameterNode)

        if not self._parameterNode.inputVolume:
            firstVolume = next((node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                                if not node.IsA("vtkMRMLLabelMapVolumeNode")), None)
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode: MonaiDeployerParameterNode | None) -> None:
        """Set and observe parameter node; the GUI follows it through connectGui."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Each widget that holds a parameter has a "SlicerParameterName" dynamic property in the .ui file.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self._updateButtons()
        if self._parameterNode and self._packageKey() != self._describedPackage:
            self._packageInfoTimer.start()  # restarts the delay while the user keeps typing

    def _packageKey(self) -> tuple:
        p = self._parameterNode
        return (p.packagePath.strip(), p.mode, p.workerPython.strip(), p.device, p.appModelPath.strip(), p.appLaunch,
                p.appInputFormat, p.containerRuntime, p.madeEnvironment)

    def isRunning(self) -> bool:
        return self._job is not None

    def _updateButtons(self) -> None:
        running = self.isRunning()
        p = self._parameterNode
        for section in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton,
                        self.ui.advancedCollapsibleButton):
            section.enabled = not running
        self.ui.outputKindComboBox.enabled = bool(p) and p.outputNode is None
        self.ui.cancelButton.enabled = running
        if running:
            self.ui.applyButton.enabled = False
            self.ui.applyButton.toolTip = _("A model is running; wait for it or cancel it.")
        elif p and p.inputVolume and p.packagePath.strip():
            self.ui.applyButton.enabled = True
            self.ui.applyButton.toolTip = _("Run the model on the input volume.")
        else:
            self.ui.applyButton.enabled = False
            self.ui.applyButton.toolTip = _("Choose an input volume and a model package.")

    def onOutputNodeChanged(self, node) -> None:
        """An existing output node decides the output kind."""
        if self._parameterNode and node is not None:
            self._parameterNode.outputKind = outputKindOf(node)

    def onPackageFolderButton(self) -> None:
        """ctkPathLineEdit browses files or folders, not both: folder packages get their own button."""
        current = self._parameterNode.packagePath if self._parameterNode else ""
        folder = qt.QFileDialog.getExistingDirectory(
            self.parent, _("Choose a model package folder"), current if os.path.isdir(current) else "")
        if folder:
            self.ui.packagePathLineEdit.currentPath = folder

    #
    # Info card
    #

    def updatePackageInfo(self) -> None:
        """Describe the chosen package and check it against the worker's environment.

        Problems are shown in the card (a package being typed in is often not valid yet), never as dialogs.
        """
        if not self._parameterNode or self.isRunning():
            return  # a run in flight holds the worker; the card is refreshed when it ends
        key = self._packageKey()
        if key == self._describedPackage:
            return
        self._describedPackage = key
        path, _, python, device = key[:4]
        if not path:
            self.ui.packageInfoBrowser.clear()
            return

        from MonaiDeployerLib import MonaiDeployerError

        try:
            package = self._openChosenPackage()
        except MonaiDeployerError as error:
            self.ui.packageInfoBrowser.setHtml(messageHtml(_("This is not a usable model package."), str(error)))
            return
        self.ui.packagePathLineEdit.addCurrentPathToHistory()
        if package.mode == "map":
            self.ui.packageInfoBrowser.setHtml(self._mapInfoHtml(package))
            return
        environment, problems, workerError = None, [], None
        try:
            with slicer.util.WaitCursor():
                runner = self.logic.runner(python, device)
                environment = runner.environment()
                problems = runner.check_requirements(package)
        except MonaiDeployerError as error:
            workerError = str(error)
        self.ui.packageInfoBrowser.setHtml(packageInfoHtml(package, environment, problems, workerError,
                                                           self.logic.isTrusted(package)))
        self._preferSegmentationForOverlaps(package)

    def _mapInfoHtml(self, package) -> str:
        """A MAP's manifests, resources and CUDA verdict, read from the image before any run."""
        from MonaiDeployerLib import MonaiDeployerError, NotAMapError

        try:
            with slicer.util.WaitCursor():
                title, facts = self.logic.describeMap(package, self._parameterNode.device)
        except NotAMapError as error:
            return messageHtml(_("This image is not a MONAI Application Package."),
                               str(error) + " " + _("Apply asks whether to run its entry point anyway."))
        except MonaiDeployerError as error:
            return messageHtml(_("This image cannot be run."), str(error))
        return factsHtml(title, facts)

    def _preferSegmentationForOverlaps(self, package) -> None:
        """A labelmap holds one label per voxel: for a model whose segments overlap, make a segmentation instead."""
        p = self._parameterNode
        if package.settings.get("outputs_overlap") and p.outputNode is None and p.outputKind == "labelmap":
            p.outputKind = "segmentation"
            self._appendLog(_("{package}'s segments can overlap: the output will be a segmentation, "
                              "one segment per channel.").format(package=package.name))

    #
    # Running
    #

    def onApplyButton(self) -> None:
        """Start a run; the poll timer follows it, so the GUI never waits on the model."""
        from MonaiDeployerLib import MonaiDeployerError

        p = self._parameterNode
        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.value = 0
        self._appendLog(_("Running {package} on {volume}.").format(
            package=p.packagePath, volume=p.inputVolume.GetName()))
        # Expected failures (a bad package, a worker that cannot start) go to the status line;
        # anything else is a bug, shown with its traceback.
        with slicer.util.tryWithErrorDisplay(_("Could not start the model.")):
            try:
                package = self._openChosenPackage()
                if package.mode == "map":
                    package = self._mapOrEntryPoint(package)
                    if package is None:
                        return
                if not self._trusted(package):
                    return
                python = p.workerPython
                if p.madeEnvironment and package.mode != "map":
                    python = self._madeEnvironmentPython(package)
                if python is None or not self._workerReady(package, python):
                    return
                self._jobCreatesNode = p.outputNode is None
                self._jobDeadline = time.monotonic() + p.runTimeout if p.runTimeout > 0 else None
                self._job = self.logic.start(p.inputVolume, package, p.outputNode, p.outputKind, p.device, python)
            except MonaiDeployerError as error:
                self._reportFailure(str(error))
                return
        self._setStatus(_("Started."), log=False)
        self._updateButtons()
        self._pollTimer.start()

    def _openChosenPackage(self, entryPoint: bool = False):
        """The package the panel names, with its Deploy app and MAP options (ignored by other modes)."""
        p = self._parameterNode
        return self.logic.openPackage(p.packagePath, p.mode, appModel=p.appModelPath, appLaunch=p.appLaunch,
                                      appInputFormat=p.appInputFormat, containerRuntime=p.containerRuntime,
                                      entryPoint=entryPoint)

    def _mapOrEntryPoint(self, package):
        """The MAP to run; for an image without MAP manifests, its own entry point if the user agrees, else None."""
        from MonaiDeployerLib import NotAMapError

        try:
            with slicer.util.WaitCursor():
                self.logic.describeMap(package, self._parameterNode.device)
            return package
        except NotAMapError as error:
            if slicer.util.confirmYesNoDisplay(
                    _("{error}\n\nRun the image's own entry point anyway?").format(error=error),
                    windowTitle=_("MONAI Deployer: not a MAP")):
                return self._openChosenPackage(entryPoint=True)
        self._setStatus(_("Not started: the image is not a MONAI Application Package."))
        return None

    def _trusted(self, package) -> bool:
        """Ask once per package content before running code that comes with it."""
        if self.logic.isTrusted(package):
            return True
        if slicer.util.confirmYesNoDisplay(
                _("{package} is a {mode} package: its configs or code are Python that will run on this computer "
                  "with your permissions. Run it only if you trust where it came from.\n\nTrust and run {package}?"
                  ).format(package=package.name, mode=package.mode),
                windowTitle=_("MONAI Deployer: trust this package?")):
            self.logic.trustPackage(package)
            return True
        self._setStatus(_("Not started: the package is not trusted."))
        return False

    def _madeEnvironmentPython(self, package):
        """The Python of the environment made for the package (made now, pip's lines in the log), or None."""
        from MonaiDeployerLib import MonaiDeployerError

        def progress(line: str) -> None:
            self._appendLog(line)
            slicer.app.processEvents()  # the install takes a while: keep the log moving

        self.ui.applyButton.enabled = False  # the log's events must not start a second run meanwhile
        try:
            made = self.logic.madeEnvironment(package, self._parameterNode.workerPython, progress)
        except MonaiDeployerError as error:
            self._reportFailure(str(error))
            return None
        finally:
            self._updateButtons()
        if made.made_now:
            self._appendLog(_("Made the environment {name} in {seconds:.0f} s.").format(
                name=made.name, seconds=made.seconds))
        return made.python

    def onMadeEnvironmentsButton(self) -> None:
        """List the made environments with their disk use; remove the one the user picks."""
        from MonaiDeployerLib.environments import list_environments, remove_environment

        found = list_environments()
        if not found:
            slicer.util.infoDisplay(_("No environment has been made yet."), windowTitle=_("MONAI Deployer"))
            return
        items = [_("{name} ({size:.0f} MiB): {requirements}").format(
            name=made.name, size=made.disk_bytes() / 2**20,
            requirements=" ".join(made.requirements) if made.ready else _("half-made")) for made in found]
        chosen = qt.QInputDialog.getItem(self.parent, _("Made environments"), _("Remove this environment:"), items,
                                         0, False)
        # Qt answers Cancel with the first item's text: removing always asks again.
        if chosen in items and slicer.util.confirmOkCancelDisplay(
                _("Remove {item}?").format(item=chosen), windowTitle=_("MONAI Deployer")):
            name = found[items.index(chosen)].name
            remove_environment(name)
            self._appendLog(_("Removed the environment {name}.").format(name=name))

    def _workerReady(self, package, python: str) -> bool:
        """The worker's environment can run this package, after offering to install what it lacks."""
        p = self._parameterNode
        runner = self.logic.runner(python, p.device)
        with slicer.util.WaitCursor():
            missing = missingPackages(WORKER_PACKAGES.get(package.mode, ()), package.requirements,
                                      runner.environment()["packages"])
        if missing and not self._installIntoSlicerPython(missing, python):
            return False
        runner = self.logic.runner(python, p.device)  # a fresh worker if packages were installed
        with slicer.util.WaitCursor():
            problems = runner.check_requirements(package)
        if not problems:
            return True
        for problem in problems:
            self._appendLog(problem)
        if slicer.util.confirmOkCancelDisplay(
                _("The worker's Python environment does not meet the requirements of {package}:\n\n{problems}\n\n"
                  "Run it anyway?").format(package=package.name, problems="\n".join(problems)),
                windowTitle=_("MONAI Deployer")):
            return True
        self._setStatus(_("Not started: the package's requirements are not met (see the log)."))
        return False

    def _installIntoSlicerPython(self, missing: list, python: str) -> bool:
        """Install what Slicer's own Python lacks, after one question (none while testing): torch through the
        PyTorch extension, the rest with pip, never replacing a package Slicer ships."""
        names = ", ".join(missing)
        if not self.logic.usesSlicerPython(python):
            self._reportFailure(_("The worker Python {python} lacks {packages}. Install them in that environment, "
                                  "tick 'Environment made for the package', or leave 'Worker Python' empty to use "
                                  "Slicer's own Python.").format(python=python, packages=names))
            return False
        if tuple(missing) in self._declinedInstalls:
            self._reportFailure(_("{packages} not installed (you declined), so the model cannot run.").format(
                packages=names))
            return False
        if not slicer.app.testingEnabled() and not slicer.util.confirmOkCancelDisplay(
                _("The model needs {packages}, which Slicer's Python does not have. Install now? This downloads "
                  "them from the Python Package Index and can take a few minutes; packages Slicer ships are kept "
                  "as they are.").format(packages=names), windowTitle=_("MONAI Deployer")):
            self._declinedInstalls.add(tuple(missing))
            self._reportFailure(_("{packages} not installed, so the model cannot run.").format(packages=names))
            return False
        try:
            with slicer.util.WaitCursor():
                self.logic.installIntoSlicerPython(missing)
        except Exception as error:  # pip and the PyTorch extension report failures as assorted exceptions
            logging.exception("Installing %s failed", names)
            self._reportFailure(_("Installing {packages} failed: {error}").format(packages=names, error=error))
            return False
        self.logic.closeRunner()  # the running worker started before the install
        self._appendLog(_("Installed {packages}.").format(packages=names))
        from MonaiDeployerLib.environments import needs_restart

        loaded = needs_restart(missing, sys.modules)
        if loaded:
            slicer.util.infoDisplay(_("{packages} were already loaded in Slicer: restart Slicer before other "
                                      "modules use the new versions (the model's own worker uses them now)."
                                      ).format(packages=", ".join(loaded)), windowTitle=_("MONAI Deployer"))
        return True

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._setStatus(_("Cancelling..."), log=False)
            self._job.cancel()  # the next poll reports the outcome

    def _onPollTimer(self) -> None:
        job = self._job
        if job is None:
            self._pollTimer.stop()
            return
        try:
            for event in job.poll():
                self._showEvent(event)
        except Exception as error:  # a broken job must not leave the timer firing forever
            logging.exception("Polling the run failed")
            job.cancel()
            self._pollTimer.stop()
            self._job = None
            self._reportFailure(str(error))
            self._updateButtons()
            return
        if not job.done and self._jobDeadline is not None and time.monotonic() > self._jobDeadline:
            job.cancel()  # the worker and everything it started stop; the next poll reports it
            self._appendLog(_("No result after {seconds} s (the time-out in Advanced): the run was stopped.").format(
                seconds=self._parameterNode.runTimeout))
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

        self._pollTimer.stop()
        self._job = None
        self.ui.progressBar.setRange(0, 100)
        if job.error is None:
            self.ui.progressBar.value = 100
            showResult(job.input_node, job.output_node)
            for note in job.result.notes:
                self._appendLog(note)
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
        self._onParameterNodeModified()  # the card may have been left stale while the run held the worker

    def _reportFailure(self, message: str) -> None:
        self._setStatus(_("Failed: {message}").format(message=message))
        self.ui.logCollapsibleButton.collapsed = False

    def _setStatus(self, text: str, log: bool = True) -> None:
        self.ui.stageLabel.text = text
        if log:
            self._appendLog(text)

    def _appendLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)


def outputKindOf(node) -> str:
    return "segmentation" if node.IsA("vtkMRMLSegmentationNode") else "labelmap"


def showResult(inputVolume, outputNode) -> None:
    """Show the result over its input in the slice views."""
    if outputNode.IsA("vtkMRMLLabelMapVolumeNode"):
        slicer.util.setSliceViewerLayers(background=inputVolume, label=outputNode)
    else:
        outputNode.CreateDefaultDisplayNodes()
        slicer.util.setSliceViewerLayers(background=inputVolume)


def missingPackages(needed, requirements: dict, installed: dict) -> list:
    """What the worker environment lacks: names in ``needed``, then the package's requirements as pip specs."""
    from MonaiDeployerLib.packages import missing_requirements, normalise_name

    missing = [name for name in needed if normalise_name(name) not in installed]
    wanted = {name: specifier for name, specifier in requirements.items() if name not in missing}
    return missing + [f"{name}{wanted[name]}" for name in wanted
                      if missing_requirements({name: wanted[name]}, installed)]


def isTorch(requirement: str) -> bool:
    """True for "torch" or a torch requirement such as "torch>=2.4" (installed by the PyTorch extension)."""
    from MonaiDeployerLib.packages import normalise_name

    return normalise_name(re.split(r"[<>=!~\s]", requirement)[0]) == "torch"


def messageHtml(title: str, detail: str) -> str:
    return f"<p><b>{html.escape(title)}</b></p><p>{html.escape(detail)}</p>"


def factRows(facts: list) -> str:
    """(heading, text) pairs as lines of the info card."""
    return "".join(f"<br><b>{html.escape(heading.capitalize())}:</b> {html.escape(text)}" for heading, text in facts)


def factsHtml(title: str, facts: list) -> str:
    return f"<h3>{html.escape(title)}</h3><p>{factRows(facts)}</p>"


def packageInfoHtml(package, environment, problems: list, workerError: str | None, trusted: bool) -> str:
    """The info card: what the package says about itself and whether the worker can run it."""
    from MonaiDeployerLib.packages import normalise_name, package_facts

    e = html.escape
    parts = [f"<h3>{e(package.name)} <small>{e(package.version)}</small></h3>"]
    if package.description:
        parts.append(f"<p>{e(package.description)}</p>")
    facts = factRows(package_facts(package, trusted))
    parts.append("<p><b>{}</b> {}<br><b>{}</b> {}{}</p>".format(
        e(_("Mode:")), e(package.mode), e(_("Package:")), e(package.path), facts))

    if package.labels:
        rows = []
        for value, name in sorted(package.labels.items()):
            r, g, b = package.colors.get(value, (0.5, 0.5, 0.5))
            swatch = f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}"
            rows.append(f'<tr><td style="background-color:{swatch}">&nbsp;&nbsp;&nbsp;</td>'
                        f"<td>{value}</td><td>{e(name)}</td></tr>")
        parts.append("<p><b>{}</b></p><table cellspacing='2'>{}</table>".format(e(_("Labels:")), "".join(rows)))

    if workerError is not None:
        parts.append("<p><b>{}</b> {}</p>".format(e(_("Worker:")), e(_("cannot start: {error}").format(
            error=workerError))))
        return "".join(parts)
    installed = environment["packages"]
    parts.append("<p><b>{}</b> {}</p>".format(e(_("Worker:")), e(_("Python {version} ({path})").format(
        version=environment.get("python", "?"), path=environment.get("executable", "?")))))
    if package.requirements:
        rows = []
        for name, specifier in sorted(package.requirements.items()):
            version = installed.get(normalise_name(name))
            mentioned = any(re.search(rf"\b{re.escape(name)}\b", problem, re.IGNORECASE) for problem in problems)
            ok = version is not None and not mentioned
            state = _("OK") if ok else (_("missing") if version is None else _("wrong version"))
            colour = "green" if ok else "red"
            found = version if version is not None else "-"
            rows.append(f"<tr><td style='color:{colour}'>{e(state)}</td><td>{e(name)}{e(specifier)}</td>"
                        f"<td>{e(found)}</td></tr>")
        parts.append("<p><b>{}</b></p><table cellspacing='4'>{}</table>".format(
            e(_("Requirements:")), "".join(rows)))
    if problems:
        items = "".join(f"<li>{e(problem)}</li>" for problem in problems)
        parts.append(f"<ul style='color:red'>{items}</ul>")
    return "".join(parts)


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
        self._runnerKey = None

    def getParameterNode(self):
        return MonaiDeployerParameterNode(super().getParameterNode())

    @staticmethod
    def defaultPython() -> str:
        """Slicer's own interpreter; inside Slicer ``sys.executable`` may be the application itself."""
        return shutil.which("PythonSlicer") or sys.executable

    def usesSlicerPython(self, python: str | None) -> bool:
        python = (python or "").strip()
        if not python:
            return True
        return os.path.realpath(python) == os.path.realpath(self.defaultPython())

    def runner(self, python: str | None = None, device: str = "auto"):
        """The warm worker for this interpreter and device; a new one when either changes."""
        from MonaiDeployerLib import Runner

        key = ((python or "").strip() or self.defaultPython(), device)
        if self._runner is None or self._runnerKey != key:
            self.closeRunner()
            self._runner = Runner(python=key[0], device=device)
            self._runnerKey = key
        return self._runner

    def closeRunner(self) -> None:
        if self._runner is not None:
            self._runner.close()
        self._runner = None
        self._runnerKey = None

    @staticmethod
    def openPackage(path: str, mode: str | None = None, appModel: str = "", appLaunch: str = "warm",
                    appInputFormat: str = "auto", containerRuntime: str = "auto", entryPoint: bool = False):
        """Describe a package; mode None or "auto" detects it. The app* options apply to MONAI Deploy apps and
        MAPs, containerRuntime and entryPoint (run an image that is not a MAP anyway) to MAPs."""
        from MonaiDeployerLib import open_package

        return open_package(path.strip(), mode=None if mode in (None, "auto") else mode,
                            model=appModel.strip() or None, launch=appLaunch,
                            input_format=None if appInputFormat == "auto" else appInputFormat,
                            runtime=None if containerRuntime == "auto" else containerRuntime, entry_point=entryPoint)

    def installIntoSlicerPython(self, requirements: list) -> None:
        """torch through the PyTorch extension's PyTorchUtils; the rest with pip, constrained to keep every package
        Slicer ships at its installed version. Raises when either fails."""
        from MonaiDeployerLib.environments import shipped_constraints
        from MonaiDeployerLib.worker import installed_packages

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

    def madeEnvironment(self, package, python: str | None, progress):
        """The environment made for ``package`` over ``python`` (default: Slicer's), made now if need be."""
        from MonaiDeployerLib.environments import make_environment

        return make_environment(package, (python or "").strip() or self.defaultPython(), progress)

    @staticmethod
    def describeMap(package, device: str = "auto") -> tuple:
        """A MAP image's title and (heading, text) facts, its CUDA verdict among them; raises NotAMapError."""
        from MonaiDeployerLib.containers import find_runtime
        from MonaiDeployerLib.maps import describe_map, inspect_map

        facts = inspect_map(find_runtime(package.settings.get("runtime")), package.path,
                            entry_point=package.settings.get("entry_point", False))
        return f"{facts.title} {facts.version}".strip(), describe_map(facts, facts.verdict(
            gpu_requested=device != "cpu"))

    def start(self, inputVolume, package, outputNode=None, outputKind="labelmap", device="auto", python=None,
              trust=False):
        """Start a run and return its NodeSegmentation at once: poll it, or wait for it.

        A bundle or Deploy app runs code: unless the user trusted it before (``isTrusted``), pass trust=True.
        """
        from MonaiDeployerLib.noderun import NodeSegmentation

        return NodeSegmentation(self.runner(python, device), package, inputVolume, output_node=outputNode,
                                output_kind=outputKind, trust=trust, dicom_files=self.dicomFilesOf(inputVolume))

    def process(self, inputVolume, packagePath, mode=None, outputNode=None, outputKind="labelmap", device="auto",
                python=None, trust=False):
        """Run a package on a volume node and return the output node (blocks; raises MonaiDeployerError)."""
        package = self.openPackage(packagePath, mode)
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

    @staticmethod
    def isTrusted(package) -> bool:
        """True for packages that run no code of their own, and for those the user has trusted."""
        from MonaiDeployerLib.trust import TrustList

        return not package.content_hash or TrustList().is_trusted(package)

    @staticmethod
    def trustPackage(package) -> None:
        """Remember that the user trusts this package's exact content."""
        from MonaiDeployerLib.trust import TrustList

        TrustList().trust(package)


#
# MonaiDeployerTest
#


class MonaiDeployerTest(ScriptedLoadableModuleTest):
    """The library's shared scenarios, then the panel driven as a user would."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_Scenarios()
        self.setUp()
        self.test_Panel()

    def test_Scenarios(self):
        from MonaiDeployerLib import selftest

        logic = MonaiDeployerLogic()
        try:
            selftest.run_all(slicer.mrmlScene, logic.runner(), log=self.delayDisplay)
        finally:
            logic.closeRunner()

    def test_Panel(self):
        """Pick the sample model and a phantom in the panel, Apply, wait without blocking, check the result."""
        import time

        from MonaiDeployerLib import sampledata, selftest

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
        self.assertIn("torchscript", widget.ui.packageInfoBrowser.toPlainText())
        self.assertTrue(widget.ui.applyButton.enabled)

        widget.ui.applyButton.click()
        deadline = time.monotonic() + 600
        while widget.isRunning():
            self.assertLess(time.monotonic(), deadline, "the run did not finish in 10 minutes")
            slicer.app.processEvents()
            time.sleep(0.02)

        segmentations = slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
        self.assertEqual(len(segmentations), 1, widget.ui.stageLabel.text)
        segmentation = segmentations[0].GetSegmentation()
        names = {segmentation.GetNthSegment(index).GetName() for index in range(segmentation.GetNumberOfSegments())}
        self.assertEqual(names, set(sampledata.LABELS.values()))
        self.assertTrue(widget.ui.applyButton.enabled)
        self.delayDisplay("Panel test passed")
