"""The panel's .ui file and MonaiDeployer.py agree with each other.

The .ui is loaded with PySide6's QUiLoader on the offscreen platform. It does not know Slicer's CTK
and MRML widget classes and falls back to their base class (QWidget), keeping each widget's object
name and dynamic properties, which is what these checks need (the first test makes sure of that).
The classes each widget is declared with, and the .ui's signal connections, are read from the XML.
MonaiDeployer.py cannot be imported outside Slicer, so it is read with ``ast``.
"""

from __future__ import annotations

import ast
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from PySide6.QtCore import QFile, QObject
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import QApplication, QWidget

REPO = Path(__file__).resolve().parents[1]
UI_FILE = REPO / "MonaiDeployer" / "Resources" / "UI" / "MonaiDeployer.ui"
MODULE_FILE = REPO / "MonaiDeployer" / "MonaiDeployer.py"
PARAMETER_PROPERTY = "SlicerParameterName"

# Parameters that no widget shows, each with the reason the code sets it instead. None at present.
CODE_MANAGED_PARAMETERS: dict[str, str] = {}

# What each widget class can be bound to by Slicer's parameterNodeWrapper (guiConnectors.py), as the
# annotation reads in MonaiDeployer.py: "node" (MRML node classes), "choice" (Annotated[..., Choice(...)]),
# or a type name.
BINDABLE = {
    "qMRMLNodeComboBox": {"node"},
    "QComboBox": {"choice"},
    "ctkComboBox": {"choice"},
    "ctkPathLineEdit": {"pathlib.Path", "Path"},
    "QLineEdit": {"str"},
    "QCheckBox": {"bool"},
    "ctkCheckBox": {"bool"},
    "QSpinBox": {"int"},
    "QDoubleSpinBox": {"float"},
    "ctkSliderWidget": {"float"},
}


@pytest.fixture(scope="module")
def loaded_ui() -> QWidget:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display needed
    app = QApplication.instance() or QApplication([])
    ui_file = QFile(str(UI_FILE))
    assert ui_file.open(QFile.ReadOnly)
    try:
        widget = QUiLoader().load(ui_file)
    finally:
        ui_file.close()
    assert widget is not None, "QUiLoader could not load the .ui file"
    yield widget
    widget.deleteLater()
    app.processEvents()


@pytest.fixture(scope="module")
def widgets(loaded_ui) -> dict:
    """What ``slicer.util.childWidgetVariables`` makes ``self.ui`` of: the top widget and every named descendant."""
    named = {child.objectName(): child for child in loaded_ui.findChildren(QObject) if child.objectName()}
    return {loaded_ui.objectName(): loaded_ui, **named}


@pytest.fixture(scope="module")
def bound(widgets) -> dict:
    """Parameter name -> object names of the widgets that carry it in SlicerParameterName."""
    names = {}
    for name, widget in widgets.items():
        parameter = widget.property(PARAMETER_PROPERTY)
        if parameter:
            names.setdefault(parameter, []).append(name)
    return names


@pytest.fixture(scope="module")
def xml_root() -> ElementTree.Element:
    return ElementTree.parse(UI_FILE).getroot()


@pytest.fixture(scope="module")
def declared_classes(xml_root) -> dict:
    """Object name -> the class the .ui declares (Slicer's custom classes included)."""
    return {element.get("name"): element.get("class") for element in xml_root.iter("widget")}


@pytest.fixture(scope="module")
def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"), filename=str(MODULE_FILE))


@pytest.fixture(scope="module")
def parameter_fields(module_tree) -> dict:
    """Field name -> annotation of the @parameterNodeWrapper class."""
    wrapped = [node for node in module_tree.body if isinstance(node, ast.ClassDef)
               and any(ast.unparse(decorator) == "parameterNodeWrapper" for decorator in node.decorator_list)]
    assert len(wrapped) == 1, "expected one @parameterNodeWrapper class"
    fields = {node.target.id: node.annotation for node in wrapped[0].body
              if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    assert fields, "the parameter node class has no fields"
    return fields


def ui_names_used(tree: ast.Module) -> set:
    """NAME in every ``<something>.ui.NAME`` (``self.ui.applyButton``, ``widget.ui.stageLabel``)."""
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}


def annotation_kind(annotation: ast.expr) -> str:
    """How BINDABLE names an annotation: "node", "choice", or the type's name."""
    names = [ast.unparse(part) for part in _union_members(annotation)]
    if all(name.startswith("vtkMRML") or name == "None" for name in names) and any(n != "None" for n in names):
        return "node"
    if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "Annotated":
        extras = annotation.slice.elts[1:] if isinstance(annotation.slice, ast.Tuple) else []
        if any(isinstance(extra, ast.Call) and ast.unparse(extra.func) == "Choice" for extra in extras):
            return "choice"
        return annotation_kind(annotation.slice.elts[0])
    return ast.unparse(annotation)


def _union_members(annotation: ast.expr) -> list:
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _union_members(annotation.left) + _union_members(annotation.right)
    return [annotation]


def test_quiloader_keeps_slicer_widgets_and_their_properties(widgets, declared_classes):
    """The premise of this file: Slicer's classes load as plain QWidgets, names and dynamic properties intact."""
    custom = {name for name, cls in declared_classes.items() if cls.startswith(("qMRML", "ctk"))}
    assert custom, "the .ui declares no Slicer widgets"
    assert custom <= set(widgets), sorted(custom - set(widgets))
    assert widgets["inputSelector"].property(PARAMETER_PROPERTY) == "inputVolume"


def test_every_ui_name_used_by_the_module_exists(module_tree, widgets):
    used = ui_names_used(module_tree)
    assert {"applyButton", "cancelButton"} <= used, "no self.ui.* uses found"
    assert sorted(used - set(widgets)) == [], "MonaiDeployer.py uses widgets that the .ui does not have"


def test_every_slicer_parameter_name_is_a_parameter(bound, parameter_fields):
    assert sorted(set(bound) - set(parameter_fields)) == [], "SlicerParameterName without a parameter"
    assert {name: owners for name, owners in bound.items() if len(owners) > 1} == {}, "parameter bound twice"


def test_every_parameter_is_bound_or_code_managed(bound, parameter_fields):
    unbound = set(parameter_fields) - set(bound) - set(CODE_MANAGED_PARAMETERS)
    assert sorted(unbound) == [], "parameters with no widget; bind them or list them in CODE_MANAGED_PARAMETERS"
    assert sorted(set(CODE_MANAGED_PARAMETERS) & set(bound)) == [], "a code-managed parameter is also bound"
    assert sorted(set(CODE_MANAGED_PARAMETERS) - set(parameter_fields)) == [], "stale CODE_MANAGED_PARAMETERS"


def test_each_bound_widget_can_carry_its_parameter(bound, parameter_fields, declared_classes):
    """connectGui raises in Slicer when no connector joins a widget class and a parameter type."""
    for parameter, (owner,) in bound.items():
        widget_class = declared_classes[owner]
        kind = annotation_kind(parameter_fields[parameter])
        assert kind in BINDABLE.get(widget_class, set()), (parameter, widget_class, kind)


def test_node_selectors_offer_the_parameter_node_types(bound, parameter_fields, declared_classes, xml_root):
    """The .ui's nodeTypes are what the parameter's annotation allows (connectGui would overwrite them)."""
    for parameter, (owner,) in bound.items():
        if declared_classes[owner] != "qMRMLNodeComboBox":
            continue
        element = next(e for e in xml_root.iter("widget") if e.get("name") == owner)
        node_types = {s.text for p in element.findall("property") if p.get("name") == "nodeTypes"
                      for s in p.iter("string")}
        annotated = {ast.unparse(m) for m in _union_members(parameter_fields[parameter])} - {"None"}
        assert node_types == annotated, (parameter, node_types, annotated)


def test_mrml_widgets_receive_the_scene(declared_classes, xml_root):
    """A qMRMLNodeComboBox that never gets setMRMLScene stays empty in Slicer."""
    top = xml_root.find("widget").get("name")
    receivers = {connection.findtext("receiver") for connection in xml_root.iter("connection")
                 if connection.findtext("sender") == top
                 and connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml_widgets = {name for name, cls in declared_classes.items() if cls.startswith("qMRML") and name != top}
    assert mrml_widgets
    assert sorted(mrml_widgets - receivers) == []


def test_node_parameters_admit_none(parameter_fields):
    """The wrapper's default for a node is None: a union without it cannot be written, and the parameter node's
    constructor raises (Slicer 5.10's UnionSerializer.default() and _findBestSerializer(None))."""
    for parameter, annotation in parameter_fields.items():
        if annotation_kind(annotation) == "node":
            assert "None" in {ast.unparse(member) for member in _union_members(annotation)}, parameter


def test_int_parameters_keep_the_spin_box_range(bound, parameter_fields, declared_classes, xml_root):
    """Slicer's int connector sets the spin box's range from the annotation (2**31-1 without one): it must be the
    .ui's own maximum."""
    for parameter, (owner,) in bound.items():
        annotation = parameter_fields[parameter]
        if declared_classes[owner] != "QSpinBox":
            continue
        element = next(e for e in xml_root.iter("widget") if e.get("name") == owner)
        maximum = int(next(p for p in element.findall("property") if p.get("name") == "maximum").findtext("number"))
        extras = annotation.slice.elts[1:] if isinstance(annotation, ast.Subscript) else []
        ranges = [extra for extra in extras if isinstance(extra, ast.Call)
                  and ast.unparse(extra.func) in ("WithinRange", "Maximum")]
        assert ranges, f"{parameter}: no WithinRange or Maximum, so the spin box's maximum becomes 2**31-1"
        bound_value = ranges[0].args[-1]
        constants = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(
            MODULE_FILE.read_text(encoding="utf-8")).body if isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Constant)}
        value = constants[bound_value.id] if isinstance(bound_value, ast.Name) else ast.literal_eval(bound_value)
        assert value == maximum, (parameter, value, maximum)
