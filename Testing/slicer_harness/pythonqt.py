"""Test adapter: PySide6 made to behave as PythonQt, the binding Slicer's Python code is written for.

What PythonQt does that PySide6 does not, and that Slicer's own Python layer and the module rely on:

- a Qt property reads and writes as an attribute (``button.enabled = False``, ``spinBox.value``), and wins over a
  method of the same name, as in PythonQt (``lineEdit.text`` is the text, not the getter);
- ``name`` is the object name (``slicer.util.childWidgetVariables`` reads it) and ``className()`` the C++ class;
- old-style connections: ``timer.connect("timeout()", slot)`` and ``disconnect("timeout()", slot)``;
- ``exec_()`` beside ``exec()``;
- ``qt.QUiLoader`` creates Slicer's C++ widgets (here: their stand-ins) and makes the ``.ui``'s connections
  whose arguments are VTK objects, which PySide6's meta types cannot carry.

Only the attribute protocol of PySide6's classes is patched (in this test process, until ``uninstall()``), and
only for code written for PythonQt: the stand-in widgets, which stand for C++, see PySide6 as it is. No Slicer code
is changed.
"""

from __future__ import annotations

import enum
import re
import sys
import types
import xml.etree.ElementTree as ElementTree

from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets


def _meta_property(obj, name: str):
    try:
        meta = QtCore.QObject.metaObject(obj)
    except (RuntimeError, TypeError):  # a deleted C++ object, or one not made yet
        return None
    index = meta.indexOfProperty(name)
    return meta.property(index) if index >= 0 else None


_SHIBOKEN_SETATTR = QtCore.QObject.__mro__[1].__setattr__  # Shiboken.Object's: PySide6 classes derive from it

# Modules whose code stands for C++ (the stand-in widgets): they see PySide6 as it is.
NATIVE_MODULES = {"slicer_harness.standin_widgets", "slicer_harness.application"}


def _from_python_qt_code() -> bool:
    """True when the attribute access comes from code written for PythonQt (Slicer's, the module's, the tests')."""
    return sys._getframe(2).f_globals.get("__name__") not in NATIVE_MODULES


def _pythonqt_getattribute(original):
    def __getattribute__(self, name):
        if name[0] != "_" and _from_python_qt_code():
            if name == "name":
                return QtCore.QObject.objectName(self)
            if name in _PYTHONQT_METHODS:
                return types.MethodType(_PYTHONQT_METHODS[name], self)
            prop = _meta_property(self, name)
            if prop is not None and prop.isReadable():
                return QtCore.QObject.property(self, name)  # QMetaProperty.read miscounts references (PySide 6.12)
        return original(self, name)

    return __getattribute__


def _pythonqt_setattr(original):
    """PySide6's own slot cannot be called once replaced (CPython refuses to jump over a C-level override), so plain
    attributes are set by the slot of Shiboken's base class, below every replaced one."""

    def __setattr__(self, name, value):
        if name[0] != "_" and _from_python_qt_code():
            if name == "name":
                QtCore.QObject.setObjectName(self, value)
                return
            prop = _meta_property(self, name)
            if prop is not None and prop.isWritable():
                if isinstance(value, tuple):  # PythonQt takes any sequence for a QStringList or QVariantList
                    value = list(value)
                written = QtCore.QObject.setProperty(self, name, value)
                if not written and isinstance(value, enum.Enum):  # PythonQt passes an enum or flag as its number
                    written = QtCore.QObject.setProperty(self, name, value.value)
                if not written:
                    raise AttributeError(f"cannot set the Qt property {name!r} of {type(self).__name__} to {value!r}")
                return
        _SHIBOKEN_SETATTR(self, name, value)

    return __setattr__


def _signal_name(signature: str) -> str:
    return signature.split("(", 1)[0].strip()


def _connect(self, signature, slot):
    """``obj.connect("signal(args)", slot)`` as in PythonQt."""
    getattr(self, _signal_name(signature)).connect(slot)
    return True


def _disconnect(self, signature, slot):
    getattr(self, _signal_name(signature)).disconnect(slot)
    return True


def _class_name(self) -> str:
    return QtCore.QObject.metaObject(self).className()


def _exec(self, *args):
    return type(self).exec(self, *args)


_PYTHONQT_METHODS = {"connect": _connect, "disconnect": _disconnect, "className": _class_name, "exec_": _exec}


def _classes(*modules):
    for module in modules:
        for key in dir(module):
            value = getattr(module, key)
            if isinstance(value, type) and issubclass(value, QtCore.QObject):
                yield value


_originals: dict = {}  # (class, attribute) -> what it was before install()


def _replace(cls, name: str, value) -> None:
    _originals[(cls, name)] = cls.__dict__.get(name, _originals)
    setattr(cls, name, value)


def install() -> None:
    """Patch PySide6's QObject classes for this process (until ``uninstall()``)."""
    if _originals:
        return
    for cls in _classes(QtCore, QtGui, QtWidgets, QtUiTools):
        # PySide6 gives many classes their own attribute slots: each needs the PythonQt protocol in front of its own.
        if "__getattribute__" in cls.__dict__:
            _replace(cls, "__getattribute__", _pythonqt_getattribute(cls.__dict__["__getattribute__"]))
        if "__setattr__" in cls.__dict__:
            _replace(cls, "__setattr__", _pythonqt_setattr(cls.__dict__["__setattr__"]))


def uninstall() -> None:
    """Give PySide6 its own behaviour back."""
    for (cls, name), value in reversed(list(_originals.items())):
        if value is _originals:
            delattr(cls, name)
        else:
            setattr(cls, name, value)
    _originals.clear()


class UiLoader(QtUiTools.QUiLoader):
    """``qt.QUiLoader``: PySide6's loader knowing the stand-in widgets; connections with VTK arguments made here."""

    standins: tuple = ()  # the stand-in classes, set by the harness

    def __init__(self, parent=None):
        super().__init__(parent)
        for cls in self.standins:
            self.registerCustomWidget(cls)

    def load(self, device, parentWidget=None):
        source = bytes(device.readAll())
        tree = ElementTree.fromstring(source)
        vtk_connections = []
        connections = tree.find("connections")
        for connection in list(connections) if connections is not None else []:
            if "vtk" in connection.findtext("signal", ""):
                vtk_connections.append(connection)
                connections.remove(connection)
        buffer = QtCore.QBuffer()
        buffer.setData(ElementTree.tostring(tree))
        buffer.open(QtCore.QIODevice.ReadOnly)
        widget = super().load(buffer, parentWidget)
        if widget is None:
            return None
        for connection in vtk_connections:
            sender = self._named(widget, connection.findtext("sender"))
            receiver = self._named(widget, connection.findtext("receiver"))
            slot = getattr(receiver, _signal_name(connection.findtext("slot")))
            _connect(sender, connection.findtext("signal"), slot)
        return widget

    @staticmethod
    def _named(top, name):
        if QtCore.QObject.objectName(top) == name:
            return top
        found = top.findChild(QtCore.QObject, name)
        if found is None:
            raise RuntimeError(f"the .ui connects {name!r}, which it does not define")
        return found


def qt_module(standins: tuple) -> types.ModuleType:
    """The ``qt`` module as Slicer's Python sees it: QtCore, QtGui, QtWidgets and the loader in one namespace."""
    module = types.ModuleType("qt", "PySide6 behaving as PythonQt (test adapter).")
    for source in (QtCore, QtGui, QtWidgets):
        for key in dir(source):  # PySide6 makes its classes on first use: vars() does not list them all
            if re.match(r"Q|q[A-Z]|Signal|Slot|Property", key):
                setattr(module, key, getattr(source, key))
    UiLoader.standins = tuple(standins)
    module.QUiLoader = UiLoader
    return module
