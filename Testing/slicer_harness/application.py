"""Stand-ins for the Slicer application objects a scripted module meets: ``slicer.app`` (qSlicerApplication), its
module manager, the module object and module widget that the scripted-module factory makes (C++ classes
qSlicerScriptedLoadableModule and qSlicerScriptedLoadableModuleWidget), and the Colors, Subject Hierarchy and
Segmentations modules with their real logics.

They do what Slicer does for a scripted module, in the same order: import the module file from its folder, make
``<Name>(parent)`` with the module object as parent, make ``<Name>Widget(parent)`` and call its ``setup()`` the
first time the panel is shown, ``enter()``/``exit()`` when the user switches to and away from the module.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from .standin_widgets import qMRMLWidget


class qSlicerScriptedLoadableModuleWidget(qMRMLWidget):
    """Stand-in for the C++ module panel that hosts a scripted module's ``<Name>Widget``."""

    def __init__(self, module):
        super().__init__()
        self.setLayout(QtWidgets.QVBoxLayout())
        self._module = module
        self._entered = False
        self._python = None

    def _getEntered(self) -> bool:
        return self._entered

    isEntered = QtCore.Property(bool, _getEntered)

    def self(self):
        """The Python ``<Name>Widget`` object, as in Slicer."""
        return self._python

    def setup(self, widget_class) -> None:
        self._python = widget_class(self)
        self._python.setup()

    def enter(self) -> None:
        self._entered = True
        self._python.enter()

    def exit(self) -> None:
        self._python.exit()
        self._entered = False


class qSlicerScriptedLoadableModule(QtCore.QObject):
    """Stand-in for the C++ module object a scripted module's ``<Name>(parent)`` describes itself on."""

    def __init__(self, path: Path, scene):
        super().__init__()
        self.path = str(path)
        self.name = path.stem
        self._scene = scene
        self._widget = None

    def widgetRepresentation(self):
        if self._widget is None:
            self._widget = self.createNewWidgetRepresentation()
        return self._widget

    def createNewWidgetRepresentation(self):
        import slicer

        panel = qSlicerScriptedLoadableModuleWidget(self)
        python_module = sys.modules[self.name]
        panel.setup(getattr(python_module, self.name + "Widget"))
        panel.setMRMLScene(self._scene)
        setattr(slicer.modules, self.name + "Widget", panel.self())
        return panel

    def logic(self):
        return None  # a scripted module's logic lives in its widget


class LoadableModule(QtCore.QObject):
    """Stand-in for a C++ loadable module that offers its real logic (here: Segmentations)."""

    def __init__(self, name: str, logic):
        super().__init__()
        self.name = name
        self._logic = logic

    def logic(self):
        return self._logic

    def widgetRepresentation(self):
        return None


class ModuleManager(QtCore.QObject):
    """Stand-in for qSlicerModuleManager: finds modules by name, tells them when they are unloaded."""

    moduleAboutToBeUnloaded = QtCore.Signal(str)

    def __init__(self):
        super().__init__()
        self._modules = {}

    def add(self, module) -> None:
        self._modules[module.name] = module

    def module(self, name: str):
        return self._modules.get(name)

    def factoryManager(self):
        return self

    def loadedModuleNames(self) -> list:
        return list(self._modules)

    def unload_all(self) -> None:
        """What Slicer does when the application quits: each module hears it is about to be unloaded."""
        for name in list(self._modules):
            self.moduleAboutToBeUnloaded.emit(name)
        self._modules.clear()


class Application:
    """Stand-in for qSlicerApplication (``slicer.app``): the QApplication plus Slicer's own methods."""

    applicationName = "Slicer"

    def __init__(self, qapp, scene):
        import slicer

        self._qapp = qapp
        self._scene = scene
        self._testing = False
        self._modules = ModuleManager()
        for name, logic_class in (("Colors", slicer.vtkSlicerColorLogic),  # the default colour tables
                                  ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
                                  ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic)):
            logic = logic_class()
            logic.SetMRMLScene(scene)  # as Slicer's module manager does: the logics watch the scene from the start
            self._register(LoadableModule(name, logic))
        self._add_view_nodes()

    def __getattr__(self, name):
        return getattr(self._qapp, name)  # processEvents, topLevelWidgets, clipboard, setOverrideCursor, ...

    def _register(self, module) -> None:
        import slicer

        self._modules.add(module)
        setattr(slicer.modules, module.name.lower(), module)
        setattr(slicer.moduleNames, module.name, module.name)

    def _add_view_nodes(self) -> None:
        """The three slice views' composite nodes, which Slicer's layout manager adds to every scene."""
        for view in ("Red", "Yellow", "Green"):
            node = self._scene.CreateNodeByClass("vtkMRMLSliceCompositeNode")
            node.SetSingletonTag(view)
            node.SetLayoutName(view)
            self._scene.AddNode(node)
            node.UnRegister(None)

    def load_scripted_module(self, path: Path):
        """Import ``path`` from its folder and make its module object, as the scripted-module factory does."""
        import slicer

        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        python_module = importlib.import_module(path.stem)
        module = qSlicerScriptedLoadableModule(path, self._scene)
        instance = getattr(python_module, path.stem)(module)
        setattr(slicer.modules, path.stem + "Instance", instance)
        self._register(module)
        return module

    def testingEnabled(self) -> bool:
        return self._testing

    def setTestingEnabled(self, enabled: bool) -> None:
        self._testing = enabled

    def mrmlScene(self):
        return self._scene

    def moduleManager(self):
        return self._modules

    def settings(self):
        return QtCore.QSettings()

    def userSettings(self):
        return QtCore.QSettings()

    def translate(self, context: str, text: str) -> str:
        return QtCore.QCoreApplication.translate(context, text)

    def layoutManager(self):
        return None  # no views are drawn offscreen; the slice composite nodes carry what they would show

    def processEvents(self, *args) -> None:
        self._qapp.processEvents(*args)
