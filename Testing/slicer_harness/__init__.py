"""Test harness: the module's panel on Slicer 5.10's own Python layer, outside the Slicer application.

What runs is real: Slicer 5.10.0's ``Base/Python/slicer`` (``util.py``, ``ScriptedLoadableModule.py``, the
parameter node wrapper and its GUI connectors, ``i18n.py``, ``testing.py``) read from ``../shared/slicer-5.10.0``
(never copied here), slicer-core's MRML scene and logics, PySide6 as ``qt`` on the offscreen platform, and
``MonaiDeployer.py`` unchanged. What the harness adds, each named as such:

- ``pythonqt``: PySide6 made to behave as PythonQt (test adapter);
- ``standin_widgets``: stand-ins for Slicer's and CTK's C++ widgets, modelled on their sources;
- ``application``: a stand-in for ``qSlicerApplication`` (module manager, settings, testing mode), and for the
  module and module-widget objects Slicer's scripted-module factory makes.

Use ``start()`` once per process, then ``load_module(path)``.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

SLICER_SOURCE = Path(__file__).resolve().parents[3] / "shared" / "slicer-5.10.0"
SLICER_PYTHON = SLICER_SOURCE / "Base" / "Python" / "slicer"
# The Slicer modules that live in ../shared and replace the slicer-core wheel's trimmed ones (logic.py is not among
# them: it imports the C++ logic kit, which slicer-core puts in the slicer namespace itself).
SLICER_SUBMODULES = ("i18n", "util", "testing", "ScriptedLoadableModule", "parameterNodeWrapper")

_started = None


def missing_reason() -> str | None:
    """Why the harness cannot run here, or None."""
    if not (SLICER_PYTHON / "ScriptedLoadableModule.py").is_file():
        return f"Slicer 5.10's Python layer is not at {SLICER_SOURCE}"
    for name in ("PySide6", "slicer"):
        try:
            importlib.import_module(name)
        except ImportError:
            return f"{name} is not installed"
    return None


# Classes Slicer's connectors and util name in type checks that the module's panel never holds: placeholders,
# never instantiated, so ``type(widget) in (ctk.ctkSliderWidget, ...)`` can be evaluated.
UNUSED_CTK = ("ctkCheckBox", "ctkCheckablePushButton", "ctkColorPickerButton", "ctkComboBox", "ctkDirectoryButton",
              "ctkDoubleRangeSlider", "ctkDoubleSlider", "ctkDoubleSpinBox", "ctkRangeWidget", "ctkSliderWidget")
UNUSED_SLICER = ("qMRMLRangeWidget", "qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLSubjectHierarchyComboBox",
                 "qMRMLSubjectHierarchyTreeView", "qSlicerWidget")


def _placeholders(names):
    from PySide6 import QtWidgets

    return {name: type(name, (QtWidgets.QWidget,), {"__doc__": "Placeholder: the panel holds none of these."})
            for name in names}


def _ctk_module():
    from PySide6 import QtWidgets

    from . import standin_widgets

    module = types.ModuleType("ctk", "Stand-ins for the CTK widgets (test harness).")
    vars(module).update(_placeholders(UNUSED_CTK))
    module.ctkPathLineEdit = standin_widgets.ctkPathLineEdit
    module.ctkCollapsibleButton = standin_widgets.ctkCollapsibleButton
    # slicer.util.messageBox uses ctkMessageBox, a QMessageBox with a "don't show again" box the module never sets.
    module.ctkMessageBox = type("ctkMessageBox", (QtWidgets.QMessageBox,),
                                {"__doc__": "Stand-in for ctkMessageBox: a QMessageBox."})
    return module


def _slicer_classes() -> dict:
    from . import application, standin_widgets

    classes = _placeholders(UNUSED_SLICER)
    classes.update(qMRMLNodeComboBox=standin_widgets.qMRMLNodeComboBox, qMRMLWidget=standin_widgets.qMRMLWidget,
                   qSlicerScriptedLoadableModule=application.qSlicerScriptedLoadableModule,
                   qSlicerScriptedLoadableModuleWidget=application.qSlicerScriptedLoadableModuleWidget)
    return classes


class _Restore:
    """What start() changed in this process, to put back in stop()."""

    def __init__(self):
        self.modules = {}
        self.attributes = {}

    def module(self, name: str, value) -> None:
        """Put ``value`` in sys.modules under ``name`` (None: take it out)."""
        self.modules.setdefault(name, sys.modules.get(name))
        if value is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = value

    def attribute(self, owner, name: str, value) -> None:
        self.attributes.setdefault((owner, name), getattr(owner, name, _MISSING))
        setattr(owner, name, value)

    def undo(self) -> None:
        for name, value in self.modules.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
        for (owner, name), value in self.attributes.items():
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


_MISSING = object()
_restore = None


def start(settings_folder: str | os.PathLike):
    """Make this process look like Slicer's embedded Python; return the application stand-in (``slicer.app``).

    ``stop()`` puts the process back as it was, so tests that run after it see plain PySide6 and slicer-core.
    """
    global _started, _restore
    if _started is not None:
        return _started
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtWidgets

    from . import application, pythonqt, standin_widgets

    qapp = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.executable])
    qapp.setOrganizationName("MonaiDeployerHarness")
    qapp.setApplicationName("Slicer")
    QtCore.QSettings.setDefaultFormat(QtCore.QSettings.IniFormat)
    QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, str(settings_folder))

    _restore = restore = _Restore()
    pythonqt.install()
    restore.module("qt", pythonqt.qt_module(standin_widgets.ALL))
    restore.module("ctk", _ctk_module())
    import slicer

    if str(SLICER_PYTHON) not in slicer.__path__:
        slicer.__path__.insert(0, str(SLICER_PYTHON))
    for name, cls in _slicer_classes().items():
        restore.attribute(slicer, name, cls)
    for name in ("modules", "moduleNames"):  # what Slicer's own slicer/__init__.py makes
        module = types.ModuleType(f"slicer.{name}")
        restore.module(f"slicer.{name}", module)
        restore.attribute(slicer, name, module)
    for name in SLICER_SUBMODULES:
        for key in [key for key in sys.modules if key == f"slicer.{name}" or key.startswith(f"slicer.{name}.")]:
            restore.module(key, None)  # the wheel's trimmed copy, if a test imported it before
        restore.module(f"slicer.{name}", None)
        restore.attribute(slicer, name, importlib.import_module(f"slicer.{name}"))
    imported = Path(slicer.util.__file__).resolve()
    if imported.parent != SLICER_PYTHON.resolve():
        raise RuntimeError(f"slicer.util came from {imported}, not Slicer 5.10's own layer")

    restore.attribute(slicer, "mrmlScene", slicer.vtkMRMLScene())
    _started = application.Application(qapp, slicer.mrmlScene)
    restore.attribute(slicer, "app", _started)
    return _started


def stop() -> None:
    """Unload the modules (their ``cleanup()`` runs, as when Slicer quits) and put the process back as it was."""
    global _started, _restore
    if _started is None:
        return
    import slicer

    from . import pythonqt

    _started.moduleManager().unload_all()
    _started.processEvents()
    for key in [key for key in sys.modules if key.startswith("slicer.") and key.split(".")[1] in SLICER_SUBMODULES]:
        del sys.modules[key]
    if str(SLICER_PYTHON) in slicer.__path__:
        slicer.__path__.remove(str(SLICER_PYTHON))
    _restore.undo()
    pythonqt.uninstall()
    _started = _restore = None


def load_module(module_file: str | os.PathLike):
    """Import a scripted module file and make its module object, as Slicer's scripted-module factory does."""
    if _started is None:
        raise RuntimeError("start() the harness first")
    return _started.load_scripted_module(Path(module_file))


__all__ = ["SLICER_SOURCE", "load_module", "missing_reason", "start", "stop"]
