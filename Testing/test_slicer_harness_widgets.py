"""The harness's stand-ins for qMRMLWidget, qMRMLNodeComboBox, ctkPathLineEdit and ctkCollapsibleButton behave as
their C++ sources (Slicer 5.10.0 and its CTK, in ../shared/slicer-5.10.0) in the points the module relies on."""

from __future__ import annotations

import importlib.util
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
slicer = pytest.importorskip("slicer")

from PySide6 import QtCore, QtUiTools, QtWidgets  # noqa: E402

HERE = Path(__file__).resolve().parent
UI_FILE = HERE.parent / "MonaiDeployer" / "Resources" / "UI" / "MonaiDeployer.ui"
PACKAGE_FILTERS = ["Model packages (*.ts *.pt *.pth *.zip *.py)", "All files (*)"]


def _load_standins():
    """The module by its file, without the harness package's __init__ (which sets up a whole application)."""
    spec = importlib.util.spec_from_file_location("standin_widgets_under_test", HERE / "slicer_harness" /
                                                  "standin_widgets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sw = _load_standins()


@pytest.fixture(scope="module")
def app():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.fixture
def settings(app, tmp_path):
    """QSettings() of the widgets go to an INI file under tmp_path."""
    names = app.organizationName(), app.applicationName()
    old_format = QtCore.QSettings.defaultFormat()
    app.setOrganizationName("HarnessTest")
    app.setApplicationName("StandinWidgets")
    QtCore.QSettings.setDefaultFormat(QtCore.QSettings.Format.IniFormat)
    QtCore.QSettings.setPath(QtCore.QSettings.Format.IniFormat, QtCore.QSettings.Scope.UserScope, str(tmp_path))
    yield QtCore.QSettings
    QtCore.QSettings.setDefaultFormat(old_format)
    app.setOrganizationName(names[0])
    app.setApplicationName(names[1])


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


class Spy:
    """Records a signal's arguments (VTK nodes by ID)."""

    def __init__(self, signal):
        self.calls = []
        signal.connect(lambda *args: self.calls.append(tuple(a.GetID() if hasattr(a, "GetID") else a for a in args)))

    def take(self):
        calls, self.calls = self.calls, []
        return calls


def combo(scene=None, **props):
    widget = sw.qMRMLNodeComboBox()
    for name, value in props.items():
        widget.setProperty(name, value)
    if scene is not None:
        widget.setMRMLScene(scene)
    return widget


def items(widget):
    box = widget.comboBox()
    return [box.itemText(i) for i in range(box.count())]


def add(scene, class_name, name=None):
    node = scene.AddNewNodeByClass(class_name)
    if name:
        node.SetName(name)
    return node


INPUT = {"nodeTypes": ["vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"], "showChildNodeTypes": False,
         "addEnabled": False, "removeEnabled": False}
OUTPUT = {"nodeTypes": ["vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"], "showChildNodeTypes": False,
          "noneEnabled": True, "addEnabled": True, "removeEnabled": True, "renameEnabled": True,
          "noneDisplay": "Create new node on Apply"}


# --- QUiLoader ------------------------------------------------------------------------------------------------------
def _ui_value(prop):
    value = prop[0]
    if value.tag == "bool":
        return value.text == "true"
    if value.tag == "stringlist":
        return [s.text or "" for s in value]
    return value.text or ""


def test_ui_file_loads_with_the_standins_and_its_properties(app):
    """Every stand-in class the module's .ui names is created as the stand-in, with the .ui's values applied."""
    loader = sw.register_all(QtUiTools.QUiLoader())
    assert {cls.__name__ for cls in sw.ALL} <= set(loader.availableWidgets())
    root = loader.load(str(UI_FILE))
    assert isinstance(root, sw.qMRMLWidget)
    classes = {cls.__name__: cls for cls in sw.ALL}
    checked = 0
    for element in ET.parse(UI_FILE).getroot().iter("widget"):
        cls = classes.get(element.get("class"))
        if cls is None:
            continue
        widget = root if element.get("name") == root.objectName() else root.findChild(QtCore.QObject,
                                                                                        element.get("name"))
        assert isinstance(widget, cls), element.get("name")
        for prop in element.findall("property"):
            name = prop.get("name")
            if prop.get("stdset") == "0" or prop[0].tag not in ("bool", "string", "stringlist"):
                continue
            assert widget.property(name) == _ui_value(prop), (element.get("name"), name)
            checked += 1
    assert checked >= 10
    inputs = root.findChild(sw.qMRMLNodeComboBox, "inputSelector")
    assert inputs.nodeTypes == INPUT["nodeTypes"] and inputs.showChildNodeTypes is False
    assert inputs.noneEnabled is False and inputs.addEnabled is False
    outputs = root.findChild(sw.qMRMLNodeComboBox, "outputSelector")
    assert outputs.noneEnabled is True and outputs.noneDisplay == "Create new node on Apply"
    advanced = root.findChild(sw.ctkCollapsibleButton, "advancedCollapsibleButton")
    assert advanced.collapsed is True and advanced.isChecked() is False and advanced.text() == "Advanced"
    assert root.findChild(sw.ctkCollapsibleButton, "inputsCollapsibleButton").collapsed is False


PATH_UI = """<ui version="4.0"><widget class="QWidget" name="root"><layout class="QVBoxLayout"><item>
<widget class="ctkPathLineEdit" name="packagePathLineEdit">
 <property name="filters"><set>ctkPathLineEdit::Dirs|ctkPathLineEdit::Files|ctkPathLineEdit::Readable</set></property>
 <property name="nameFilters"><stringlist><string>Model packages (*.ts *.pt *.pth *.zip *.py)</string>
  <string>All files (*)</string></stringlist></property>
 <property name="settingKey"><string notr="true">MonaiDeployer/RecentPackages</string></property>
</widget></item></layout></widget>
<customwidgets><customwidget><class>ctkPathLineEdit</class><extends>QWidget</extends>
<header>ctkPathLineEdit.h</header></customwidget></customwidgets></ui>"""


def test_ui_path_line_edit_properties(app, settings):
    """The package path field as the module's .ui had it: nameFilters and settingKey applied; the `<set>` value of
    filters cannot be read by QUiLoader for a Python class, so it keeps the C++ default
    AllEntries|NoDotAndDotDot|Readable|Executable (ctkPathLineEditPrivate's constructor)."""
    settings().setValue("ctkPathLineEdit/MonaiDeployer/RecentPackages", ["/data/b.ts", "/data/a.zip"])
    buffer = QtCore.QBuffer()
    buffer.setData(PATH_UI.encode())
    buffer.open(QtCore.QIODevice.OpenModeFlag.ReadOnly)
    root = sw.register_all(QtUiTools.QUiLoader()).load(buffer)
    edit = root.findChild(sw.ctkPathLineEdit, "packagePathLineEdit")
    assert isinstance(edit, sw.ctkPathLineEdit)
    assert edit.nameFilters == PACKAGE_FILTERS
    assert edit.settingKey == "MonaiDeployer/RecentPackages"
    assert edit.filters == 0x1057 == (edit.AllEntries | edit.NoDotAndDotDot | edit.Readable | edit.Executable)
    # setSettingKey -> retrieveHistory: the history fills the list and, the path being empty, the newest entry is
    # selected (ctkPathLineEdit.cpp:714-727)
    assert [edit.comboBox().itemText(i) for i in range(edit.comboBox().count())] == ["/data/b.ts", "/data/a.zip"]
    assert edit.currentPath == "/data/b.ts"


# --- qMRMLWidget ----------------------------------------------------------------------------------------------------
def test_mrml_widget_emits_scene_changes_only(app, scene):
    widget = sw.qMRMLWidget()
    spy = Spy(widget.mrmlSceneChanged)
    widget.setMRMLScene(scene)
    widget.setMRMLScene(scene)
    assert widget.mrmlScene() is scene and len(spy.take()) == 1
    widget.setMRMLScene(None)
    assert spy.take() == [(None,)] and widget.mrmlScene() is None


# --- qMRMLNodeComboBox ----------------------------------------------------------------------------------------------
def test_node_combo_filters_by_type_as_cxx(app, scene):
    volume = add(scene, "vtkMRMLScalarVolumeNode", "CT")
    labelmap = add(scene, "vtkMRMLLabelMapVolumeNode", "Labels")  # a vtkMRMLScalarVolumeNode subclass
    vector = add(scene, "vtkMRMLVectorVolumeNode", "RGB")  # also a scalar-volume subclass
    segmentation = add(scene, "vtkMRMLSegmentationNode", "Seg")
    hidden = add(scene, "vtkMRMLScalarVolumeNode", "Hidden")
    hidden.SetHideFromEditors(1)
    # showChildNodeTypes false: the class must be exactly one of nodeTypes (filterAcceptsNode)
    assert combo(scene, **INPUT).nodes() == [volume, vector]
    assert combo(scene, **OUTPUT).nodes() == [labelmap, segmentation]
    # showChildNodeTypes true (default): IsA; hideChildNodeTypes then rejects
    assert combo(scene, nodeTypes=["vtkMRMLScalarVolumeNode"]).nodes() == [volume, labelmap, vector]
    assert combo(scene, nodeTypes=["vtkMRMLScalarVolumeNode"],
                 hideChildNodeTypes=["vtkMRMLLabelMapVolumeNode"]).nodes() == [volume, vector]
    assert combo(scene, nodeTypes=["vtkMRMLScalarVolumeNode"], showHidden=True).nodes() == [
        volume, labelmap, vector, hidden]
    # addAttribute: the attribute must exist; a value must match exactly
    labelmap.SetAttribute("Kind", "a")
    volume.SetAttribute("Kind", "")
    filtered = combo(nodeTypes=["vtkMRMLScalarVolumeNode"])
    filtered.addAttribute("vtkMRMLScalarVolumeNode", "Kind")
    filtered.setMRMLScene(scene)
    assert filtered.nodes() == [volume, labelmap]
    filtered.addAttribute("vtkMRMLScalarVolumeNode", "Kind", "a")
    assert filtered.nodes() == [labelmap]
    labelmap.SetAttribute("Kind", "b")  # observed (not hard-rejected): the change hides it
    assert filtered.nodes() == []


def test_node_combo_auto_selects_the_first_node_into_an_empty_list(app, scene):
    """noneEnabled false and no action items: QComboBox selects row 0 when it is inserted into an empty list."""
    widget = combo(scene, **INPUT)
    changed, ids = Spy(widget.currentNodeChanged), Spy(widget.currentNodeIDChanged)
    assert widget.currentNode() is None and widget.isEnabled()
    first = add(scene, "vtkMRMLScalarVolumeNode", "First")
    assert widget.currentNode() is first and widget.currentNodeID == first.GetID()
    assert changed.take() == [(first.GetID(),)] and ids.take() == [(first.GetID(),)]
    add(scene, "vtkMRMLScalarVolumeNode", "Second")
    add(scene, "vtkMRMLLabelMapVolumeNode")  # filtered out
    assert widget.currentNode() is first and changed.take() == [] and widget.nodeCount() == 2
    assert items(widget) == ["First", "Second"]


def test_node_combo_with_action_items_does_not_auto_select(app, scene):
    """With addEnabled (the default) the list holds "Create new ..." items, so it is not empty when the first node
    comes: C++ keeps nothing selected."""
    widget = combo(scene, nodeTypes=["vtkMRMLScalarVolumeNode"])
    add(scene, "vtkMRMLScalarVolumeNode", "First")
    assert widget.currentNode() is None and widget.nodeCount() == 1
    assert items(widget) == ["First", "", "Create new Volume", "Delete current Volume"]


def test_node_combo_set_scene_selects_first_node_and_emits_once(app, scene):
    volume = add(scene, "vtkMRMLScalarVolumeNode", "CT")
    widget = combo(**INPUT)
    changed, added = Spy(widget.currentNodeChanged), Spy(widget.nodeAdded)
    widget.setMRMLScene(scene)
    assert widget.currentNode() is volume and changed.take() == [(volume.GetID(),)]
    assert added.take() == [(volume.GetID(),)]
    # none enabled: "None" is current, and setting the scene still emits once (the index leaves the scene item)
    outputs = combo(**OUTPUT)
    changed = Spy(outputs.currentNodeChanged)
    outputs.setMRMLScene(scene)
    assert outputs.currentNode() is None and changed.take() == [(None,)]
    outputs.setMRMLScene(None)
    assert changed.take() == [] and outputs.nodeCount() == 0 and not outputs.isEnabled()
    # nothing to select, none disabled: the index goes from the scene item to -1, still one emission
    empty = combo(nodeTypes=["vtkMRMLSegmentationNode"], addEnabled=False, removeEnabled=False)
    changed = Spy(empty.currentNodeChanged)
    empty.setMRMLScene(slicer.vtkMRMLScene())
    assert changed.take() == [(None,)] and empty.comboBox().currentIndex() == -1


def test_node_combo_none_item(app, scene):
    widget = combo(scene, **OUTPUT)
    labelmap = add(scene, "vtkMRMLLabelMapVolumeNode", "Labels")
    assert items(widget)[:2] == ["Create new node on Apply", "Labels"]
    assert widget.comboBox().currentIndex() == 0 and widget.currentNode() is None  # None stays current
    assert widget.nodeCount() == 1 and widget.nodeFromIndex(0) is labelmap
    assert items(widget)[2:] == ["", "Rename current node", "Create new Label Map Volume",
                                 "Create new Label Map Volume as...", "Create new Segmentation",
                                 "Create new Segmentation as...", "Delete current node"]
    widget.noneDisplay = "Nothing"
    assert items(widget)[0] == "Nothing"


def test_node_combo_signals_once_per_change(app, scene):
    widget = combo(scene, **OUTPUT)
    first, second = add(scene, "vtkMRMLLabelMapVolumeNode"), add(scene, "vtkMRMLSegmentationNode")
    changed, ids, activated = Spy(widget.currentNodeChanged), Spy(widget.currentNodeIDChanged), Spy(
        widget.nodeActivated)
    widget.setCurrentNode(first)
    widget.setCurrentNode(first)
    assert changed.take() == [(first.GetID(),)] and ids.take() == [(first.GetID(),)]
    assert activated.take() == [(first.GetID(),)]
    widget.setCurrentNodeID(second.GetID())
    assert changed.take() == [(second.GetID(),)] and widget.currentNodeID == second.GetID()
    widget.setCurrentNode(None)
    widget.setCurrentNode(None)
    assert changed.take() == [(None,)] and ids.take() == [(second.GetID(),), ("",)]
    widget.setCurrentNodeID("vtkMRMLNoSuchNode1")  # unknown: None, already current
    assert changed.take() == [] and widget.currentNode() is None
    inputs = combo(scene, nodeTypes=["vtkMRMLLabelMapVolumeNode"], addEnabled=False, removeEnabled=False)
    assert inputs.currentNode() is first
    changed = Spy(inputs.currentNodeChanged)
    inputs.setCurrentNode(None)  # noneEnabled false: index -1
    assert inputs.comboBox().currentIndex() == -1 and changed.take() == [(None,)]


def test_node_combo_current_node_removed(app, scene):
    widget = combo(scene, **INPUT)
    a, b, c = (add(scene, "vtkMRMLScalarVolumeNode", name) for name in "abc")
    widget.setCurrentNode(b)
    changed, removed = Spy(widget.currentNodeChanged), Spy(widget.nodeAboutToBeRemoved)
    scene.RemoveNode(b)  # the next row takes its place
    assert widget.currentNode() is c and changed.take() == [(c.GetID(),)] and removed.take() == [(b.GetID(),)]
    scene.RemoveNode(c)  # last row: the one before
    assert widget.currentNode() is a and changed.take() == [(a.GetID(),)]
    scene.RemoveNode(a)
    assert widget.currentNode() is None and changed.take() == [(None,)] and widget.nodeCount() == 0
    # with the None and action items: the removed current node gives way to the next node, else to None
    outputs = combo(scene, **OUTPUT)
    x, y = add(scene, "vtkMRMLLabelMapVolumeNode", "x"), add(scene, "vtkMRMLSegmentationNode", "y")
    outputs.setCurrentNode(x)
    changed = Spy(outputs.currentNodeChanged)
    scene.RemoveNode(x)
    assert outputs.currentNode() is y and changed.take() == [(y.GetID(),)]
    scene.RemoveNode(y)  # the row after it is the separator: the "last node" fallback finds none, then None
    assert outputs.currentNode() is None and outputs.comboBox().currentIndex() == 0 and changed.take() == [(None,)]


def test_node_combo_shows_renames_without_signalling(app, scene):
    widget = combo(scene, **INPUT)
    volume = add(scene, "vtkMRMLScalarVolumeNode", "Before")
    changed = Spy(widget.currentNodeChanged)
    volume.SetName("After")
    assert widget.comboBox().currentText() == "After" and items(widget) == ["After"]
    assert changed.take() == []


def test_node_combo_hidden_later_leaves_the_list(app, scene):
    widget = combo(scene, **INPUT)
    volume = add(scene, "vtkMRMLScalarVolumeNode")
    changed = Spy(widget.currentNodeChanged)
    volume.SetHideFromEditors(1)
    assert widget.nodeCount() == 0 and widget.currentNode() is None and changed.take() == [(None,)]


def test_node_combo_scene_close(app, scene):
    widget = combo(scene, **OUTPUT)
    labelmap = add(scene, "vtkMRMLLabelMapVolumeNode")
    widget.setCurrentNode(labelmap)
    changed, removed = Spy(widget.currentNodeChanged), Spy(widget.nodeAboutToBeRemoved)
    scene.Clear(0)
    assert widget.nodeCount() == 0 and widget.currentNode() is None and changed.take() == [(None,)]
    assert removed.take() == []  # rows go at EndClose, when the nodes are no longer in the scene
    assert items(widget)[0] == "Create new node on Apply"
    add(scene, "vtkMRMLLabelMapVolumeNode", "After close")
    assert widget.nodeCount() == 1


def test_node_combo_add_node(app, scene):
    widget = combo(scene, nodeTypes=["vtkMRMLLabelMapVolumeNode"], baseName="Result")
    by_user = Spy(widget.nodeAddedByUser)
    first, second = widget.addNode(), widget.addNode()
    assert (first.GetName(), second.GetName()) == ("Result", "Result_1")
    assert widget.currentNode() is second and by_user.take() == [(first.GetID(),), (second.GetID(),)]
    assert widget.addNode("vtkMRMLModelNode") is None
    widget.removeCurrentNode()
    assert scene.GetNodeByID(second.GetID()) is None and widget.currentNode() is first


# --- ctkPathLineEdit ------------------------------------------------------------------------------------------------
def test_name_filters_to_regexp_as_ctk_utils():
    # ctkUtils.cpp:141-151 (extensionToRegExp: ".*\\." + ext + "?$", so the last letter is optional) and 157-188
    # (alternatives joined; "*" gives no "*.<word>", so "All files (*)" adds nothing; no alternative at all: ".+")
    assert sw.nameFilterToExtensions("Model packages (*.ts *.pt)") == ["*.ts", "*.pt"]
    assert sw.nameFilterToExtensions("*.nrrd") == ["*.nrrd"]
    assert sw.nameFiltersToRegExpPattern(PACKAGE_FILTERS) == r"(.*\.ts?$|.*\.pt?$|.*\.pth?$|.*\.zip?$|.*\.py?$)"
    assert sw.nameFiltersToRegExpPattern(["All files (*)"]) == ".+"
    assert sw.nameFiltersToRegExpPattern([]) == ".+"


def test_path_line_edit_emits_only_for_acceptable_input(app, settings):
    """ctkPathLineEdit.cpp:825-845 (updateHasValidInput): currentPathChanged only when the line edit
    hasAcceptableInput(); the validator is a QRegularExpressionValidator of ctk::nameFiltersToRegularExpression
    (cpp:483-489), which calls Acceptable only a complete match. With the package filters a folder path, an image
    reference and an empty text are no complete match (Intermediate), so the C++ widget emits nothing for them
    and validInputChanged(false) when it leaves a valid path; `filters` (Dirs) plays no part (cpp:486 gives it to
    the completer only)."""
    edit = sw.ctkPathLineEdit()
    edit.nameFilters = PACKAGE_FILTERS
    edit.filters = edit.Dirs | edit.Files | edit.Readable
    path, valid = Spy(edit.currentPathChanged), Spy(edit.validInputChanged)
    edit.currentPath = "/data/model.ts"
    assert path.take() == [("/data/model.ts",)] and valid.take() == [(True,)]
    edit.setCurrentPath("/data/net.pth")
    assert path.take() == [("/data/net.pth",)] and valid.take() == []
    edit.currentPath = "/data/bundle_folder"
    assert path.take() == [] and valid.take() == [(False,)]
    assert edit.currentPath == "/data/bundle_folder"  # set all the same: setText is not validated
    edit.currentPath = "ghcr.io/org/map:1.0"
    assert path.take() == [] and valid.take() == []
    edit.currentPath = "/data/model.ts"
    valid.take(), path.take()
    edit.currentPath = ""
    assert path.take() == [] and valid.take() == [(False,)]
    for acceptable in ("/data/app.py", "/data/b.zip", "/data/model.t", "/data/b.zi"):  # "ts?$": the s is optional
        edit.currentPath = acceptable
        assert path.take() == [(acceptable,)]
    edit.currentPath = "/data/MODEL.TS"  # case-sensitive
    assert path.take() == []
    # with "All files (*)" alone the pattern is ".+": any text but the empty one is acceptable
    anything = sw.ctkPathLineEdit()
    anything.nameFilters = ["All files (*)"]
    path = Spy(anything.currentPathChanged)
    anything.currentPath = "/data/bundle_folder"
    anything.currentPath = ""
    assert path.take() == [("/data/bundle_folder",)]


def test_path_line_edit_current_path_is_the_user_property(app, settings):
    edit = sw.ctkPathLineEdit()
    assert edit.metaObject().userProperty().name() == "currentPath"
    edit.setProperty("currentPath", "/x/y.ts")
    assert edit.comboBox().lineEdit().text() == "/x/y.ts" and edit.property("currentPath") == "/x/y.ts"
    edit.comboBox().lineEdit().setText("/typed")
    assert edit.currentPath == "/typed"


def test_path_line_edit_history(app, settings):
    edit = sw.ctkPathLineEdit()
    edit.nameFilters = PACKAGE_FILTERS
    edit.settingKey = "Test/Recent"
    for n in range(7):
        edit.currentPath = f"/p/{n}.ts"
        edit.addCurrentPathToHistory()
    edit.currentPath = "/p/3.ts"
    edit.addCurrentPathToHistory()  # moved to the front, not repeated
    stored = settings().value("ctkPathLineEdit/Test/Recent")
    assert stored == ["/p/3.ts", "/p/6.ts", "/p/5.ts", "/p/4.ts", "/p/2.ts", "/p/1.ts", "/p/0.ts"]  # not capped
    box = edit.comboBox()
    assert [box.itemText(i) for i in range(box.count())] == ["/p/3.ts", "/p/6.ts", "/p/5.ts", "/p/4.ts", "/p/2.ts"]
    edit.currentPath = ""
    edit.addCurrentPathToHistory()  # an empty path is not recorded
    assert settings().value("ctkPathLineEdit/Test/Recent")[0] == "/p/3.ts"
    # another widget with the key: retrieveHistory keeps at most 5 and, its path empty, shows the newest entry
    # with this widget's signals blocked while it fills the list (cpp:700-733): no currentPathChanged
    other = sw.ctkPathLineEdit()
    other.nameFilters = PACKAGE_FILTERS
    path = Spy(other.currentPathChanged)
    other.settingKey = "Test/Recent"
    assert other.comboBox().count() == 5 and other.currentPath == "/p/3.ts" and path.take() == []
    # a path already typed is kept
    third = sw.ctkPathLineEdit()
    third.currentPath = "/mine.ts"
    third.settingKey = "Test/Recent"
    assert third.currentPath == "/mine.ts" and third.comboBox().count() == 5
    # empty settingKey: the object name is the key
    named = sw.ctkPathLineEdit()
    named.setObjectName("namedEdit")
    named.currentPath = "/n.ts"
    named.addCurrentPathToHistory()
    assert sw._toStringList(settings().value("ctkPathLineEdit/namedEdit")) == ["/n.ts"]


def test_path_line_edit_buttons(app, settings):
    edit = sw.ctkPathLineEdit()
    assert edit.showBrowseButton is True and edit.showHistoryButton is True
    edit.showBrowseButton = False
    assert edit.showBrowseButton is False


# --- ctkCollapsibleButton -------------------------------------------------------------------------------------------
def test_collapsible_button_hides_children_when_collapsed(app):
    button = sw.ctkCollapsibleButton("Section")
    layout = QtWidgets.QVBoxLayout(button)
    child, hidden = QtWidgets.QLabel("child", button), QtWidgets.QLabel("hidden", button)
    layout.addWidget(child)
    layout.addWidget(hidden)
    collapsed = Spy(button.contentsCollapsed)
    assert button.isCheckable() and button.isChecked() and button.collapsed is False
    button.setCollapsed(True)  # not yet created: children are left alone until it is shown (setChildVisibility)
    assert collapsed.take() == [(True,)] and button.isChecked() is False and not child.isHidden()
    button.show()
    assert button.isVisible() and child.isHidden() and not child.isVisible()
    assert button.maximumHeight() == button.sizeHint().height()
    hidden.hide()  # hidden by the user while collapsed: stays hidden when expanded
    button.collapsed = False
    assert collapsed.take() == [(False,)] and child.isVisible() and not hidden.isVisible()
    button.setChecked(False)  # checked == not collapsed
    assert button.collapsed is True and collapsed.take() == [(True,)] and not child.isVisible()
    button.setCollapsed(True)
    assert collapsed.take() == []
    child.show()  # shown by someone while collapsed: forced back hidden
    assert not child.isVisible()
    button.setCollapsed(False)
    assert child.isVisible() and button.maximumHeight() == 16777215
    assert button.sizeHint().height() > 0 and button.grab().width() > 0  # paints offscreen
    button.close()
