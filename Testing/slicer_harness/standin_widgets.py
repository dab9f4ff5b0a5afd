"""PySide6 stand-ins for the C++ Slicer / CTK widgets of MonaiDeployer.ui, modelled on Slicer 5.10.0 and its CTK.

Each class ports the C++ slots that matter onto real Qt objects (QComboBox, QLineEdit, QRegularExpressionValidator),
so Qt's own index and validation rules decide what they decide in C++. QUiLoader cannot make the .ui's
`mrmlSceneChanged(vtkMRMLScene*)` -> `setMRMLScene(vtkMRMLScene*)` connections (Python signals carry `object`): the
caller connects them. PySide6 drops the wrappers of Qt-made children of a widget QUiLoader created, so none is kept.
"""

import re
import weakref

import shiboken6
import vtk
from PySide6 import QtCore, QtGui, QtWidgets

_UID, _EXTRA = QtCore.Qt.ItemDataRole.UserRole + 1, QtCore.Qt.ItemDataRole.UserRole + 2  # qMRMLSceneModel roles
Policy, Attr = QtWidgets.QSizePolicy.Policy, QtCore.Qt.WidgetAttribute


def _observe(widget, obj, event, method, calldata):
    """AddObserver with a callback that holds the widget weakly (a deleted widget ignores the event)."""
    ref = weakref.ref(widget)

    def call(arg):
        if ref() is not None and shiboken6.isValid(ref()):
            getattr(ref(), method)(arg)

    cb = vtk.calldata_type(vtk.VTK_OBJECT)(lambda o, e, data: call(data)) if calldata else (lambda o, e: call(o))
    return obj.AddObserver(event, cb)


class qMRMLWidget(QtWidgets.QWidget):
    """Stand-in for the C++ qMRMLWidget (Libs/MRML/Widgets/qMRMLWidget.h/.cxx).

    Models: setMRMLScene(scene) stores the scene and emits mrmlSceneChanged(scene) when it changes; mrmlScene().
    Leaves out: the static pre/postInitializeApplication and pixmapFromIcon helpers.
    """

    mrmlSceneChanged = QtCore.Signal(object)

    def __init__(self, parent=None, flags=QtCore.Qt.WindowType.Widget):
        super().__init__(parent, flags)
        self._scene = None

    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene):
        if scene is not self._scene:
            self._scene = scene
            self.mrmlSceneChanged.emit(scene)


class qMRMLNodeComboBox(QtWidgets.QWidget):
    """Stand-in for the C++ qMRMLNodeComboBox (Libs/MRML/Widgets/qMRMLNodeComboBox.h/.cxx, with the filter of
    qMRMLSortFilterProxyModel::filterAcceptsNode and the rows of qMRMLSceneModel).

    Models: a child QComboBox (comboBox()) holding what C++ holds under the scene item: the "None" item (noneDisplay,
    if noneEnabled), the accepted nodes in scene order, then, while a scene is set, the action items (separator,
    "Rename current", "Edit current", "Create new <type>" [+ "as..."], "Delete current"). Filter: HideFromEditors
    unless showHidden; per nodeType IsA, and with showChildNodeTypes false the class must be that type exactly, with
    it true hideChildNodeTypes rejects; one addAttribute per type (no value: the attribute must exist). Followed:
    NodeAdded (not while importing), NodeAboutToBeRemoved (not while closing), EndClose/EndImport (rows rebuilt),
    node ModifiedEvent (rename, re-filter; observed only for nodes not hard-rejected, as C++). emitCurrentNodeChanged,
    refreshIfCurrentNodeHidden, setCurrentNodeIDInternal and setMRMLScene are ported, so: the first node is selected
    only when it enters an empty list (no None, no action item) with nothing current; a removed current node gives
    way to the next row (next node; else the last node; else None / nothing); currentNodeChanged + currentNodeIDChanged
    come whenever the combo's index changes (also when a row above it comes or goes, as C++), never otherwise;
    setMRMLScene(scene) from no scene emits once, setMRMLScene(None) not at all. nodeActivated: user activation, and
    setCurrentNode/ID onto a node the popup view was not on (C++ sends the view an Enter key). addNode() (baseName or
    the node's default prefix made unique, addAttribute values set, nodeAddedByUser) and removeCurrentNode().
    Leaves out: the currentNodeChanged(bool) overload (PySide6 has one signal per name), clicking the action items
    (they are listed; use addNode/removeCurrentNode; no rename dialog), ctkComboBox's "Select a ..." text,
    removeAttribute, setNodeTypeLabel, addMenuAction, sizeAdjustPolicy, interactionNodeSingletonTag,
    showHiddenForTypes, hiddenNodeIDs, IDChangedEvent, lazy batch updates, hierarchies.
    """

    currentNodeChanged = QtCore.Signal(object)  # the vtkMRMLNode* overload only
    currentNodeIDChanged = QtCore.Signal(str)
    nodeActivated, nodeAdded = QtCore.Signal(object), QtCore.Signal(object)
    nodeAddedByUser, nodeAboutToBeRemoved = QtCore.Signal(object), QtCore.Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene, self._sceneTags, self._nodeTags = None, [], {}
        self._nodeTypes, self._showHidden, self._showChild, self._hideChild = [], False, True, []
        self._attributes, self._factoryAttributes, self._baseNames = {}, {}, {}
        self._noneEnabled, self._addEnabled, self._removeEnabled = False, True, True
        self._editEnabled, self._renameEnabled, self._selectUponCreation = False, False, True
        self._noneDisplay, self._pre, self._post = "None", [], []
        self._requestedID, self._requestedNode, self._switching, self._viewID, self._emitted = "", None, False, None, 0
        QtWidgets.QHBoxLayout(self).setContentsMargins(0, 0, 0, 0)
        self.setSizePolicy(Policy.Preferred, Policy.Fixed)
        self._combo, self._model = QtWidgets.QComboBox(self), QtGui.QStandardItemModel(self)
        self._combo.setModel(self._model)
        self.layout().addWidget(self._combo)
        self._combo.currentIndexChanged.connect(self._emitCurrentNodeChanged)
        self._combo.activated.connect(self._onUserActivated)
        self.setEnabled(False)

    def comboBox(self):
        return self._combo

    # rows: nodeAdded / refreshIfCurrentNodeHidden run after QComboBox has handled the change, as in C++ (Qt 6 calls
    # a Python rowsRemoved slot before QComboBox's own, so they are called here rather than connected)
    def _insertRow(self, row, item):
        self._model.insertRow(row, item)
        self._emitNodes(self.nodeAdded, row, row)

    def _removeRows(self, row, count):
        if count > 0:
            self._emitNodes(self.nodeAboutToBeRemoved, row, row + count - 1)
            self._model.removeRows(row, count)
            self._refreshIfCurrentNodeHidden()

    def _emitNodes(self, signal, start, end):
        for _ in range(start, end + 1):
            node = self._mrmlNode(start)  # sic: C++ reads row `start` each time
            if node is not None:
                if signal is self.nodeAboutToBeRemoved and node.GetID() == self._viewID:
                    self._viewID = None  # the popup view's current row goes
                signal.emit(node)

    def _mrmlNode(self, row):
        uid = self._model.index(row, 0).data(_UID) if 0 <= row < self._model.rowCount() else None
        return self._scene.GetNodeByID(uid) if (uid and self._scene is not None) else None

    def _rowOf(self, uid):
        return next((r for r in range(self._model.rowCount()) if uid and self._model.index(r, 0).data(_UID) == uid), -1)

    def _setExtraItems(self, pre, wanted):  # qMRMLSceneModel::setPreItems / setPostItems
        current = self._pre if pre else self._post
        if self._scene is None or [t for t, _ in current] == [t for t, _ in wanted]:
            return
        while current:
            current.pop(0)
            self._removeRows(0 if pre else self._model.rowCount() - 1 - len(current), 1)
        for i, (text, data) in enumerate(wanted):
            item = QtGui.QStandardItem(text if text != "separator" else "")
            item.setData("preItem" if pre else "postItem", _UID)
            item.setData(data, _EXTRA)
            if text == "separator":
                item.setData("separator", QtCore.Qt.ItemDataRole.AccessibleDescriptionRole)
            enabled = QtCore.Qt.ItemFlag.ItemIsEnabled
            item.setFlags(enabled | QtCore.Qt.ItemFlag.ItemIsSelectable if pre else enabled)
            current.append((text, data))
            self._insertRow(i if pre else self._model.rowCount(), item)

    def _updateNoneItem(self):
        self._setExtraItems(True, [(self._noneDisplay, self._noneDisplay)] if self._noneEnabled else [])

    def _updateActionItems(self):
        items, label = [], self.nodeTypeLabel(self._nodeTypes[0] if len(self._nodeTypes) == 1 else "")
        if self._scene is not None:
            if self._addEnabled or self._removeEnabled or self._editEnabled or self._renameEnabled:
                items.append(("separator", "SEPARATOR"))
            items += [(f"Rename current {label}", "RENAME/" + label)] if self._renameEnabled else []
            items += [(f"Edit current {label}", "EDIT/" + label)] if self._editEnabled else []
            for typeLabel in map(self.nodeTypeLabel, self._nodeTypes if self._addEnabled else []):
                items.append((f"Create new {typeLabel}", "CREATE/" + typeLabel))
                items += [(f"Create new {typeLabel} as...", "CREATE_AS/" + typeLabel)] if self._renameEnabled else []
            items += [(f"Delete current {label}", "DELETE/" + label)] if self._removeEnabled else []
        index = self._combo.currentIndex()  # inserting rows may select row 0 of an empty list: C++ restores it
        self._setExtraItems(False, items)
        self._combo.setCurrentIndex(index)

    def _filterNode(self, node):
        """(accepted, observed): C++ observes every node the filter does not reject outright."""
        if not node.GetID():
            return True, True
        if not self._showHidden and node.GetHideFromEditors():
            return False, False
        for nodeType in self._nodeTypes:
            if not node.IsA(nodeType) or (not self._showChild and nodeType != node.GetClassName()):
                continue
            if self._showChild and any(node.IsA(t) for t in self._hideChild):
                return False, False
            name, value = self._attributes.get(nodeType, (None, None))
            attribute = node.GetAttribute(name) if name else ""
            return (attribute is not None and (value is None or _variantString(value) == attribute)), True
        return not self._nodeTypes, not self._nodeTypes

    def _sceneNodes(self):
        nodes = self._scene.GetNodes() if self._scene is not None else None
        return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())] if nodes else []

    def _refilter(self, node, order=None):
        accepted, observed = self._filterNode(node)
        if observed and node not in self._nodeTags:
            self._nodeTags[node] = _observe(self, node, vtk.vtkCommand.ModifiedEvent, "_onNodeModified", False)
        row = self._rowOf(node.GetID())
        if accepted and row < 0:
            order = order or {n.GetID(): i for i, n in enumerate(self._sceneNodes())}
            row, end = len(self._pre), self._model.rowCount() - len(self._post)
            while row < end and order.get(self._model.index(row, 0).data(_UID), -1) < order.get(node.GetID(), 0):
                row += 1
            item = QtGui.QStandardItem(node.GetName() or "")
            item.setData(node.GetID(), _UID)
            self._insertRow(row, item)
        elif not accepted and row >= 0:
            self._removeRows(row, 1)

    def _invalidateFilter(self):
        order = {n.GetID(): i for i, n in enumerate(self._sceneNodes())}
        for node in self._sceneNodes():
            self._refilter(node, order)

    def _onNodeAdded(self, node):
        if node is not None and not self._scene.IsImporting():
            self._refilter(node)

    def _onNodeAboutToBeRemoved(self, node):
        if node is not None and not self._scene.IsClosing():
            if node in self._nodeTags:
                node.RemoveObserver(self._nodeTags.pop(node))
            row = self._rowOf(node.GetID())
            if row >= 0:
                self._removeRows(row, 1)

    def _onNodeModified(self, node):
        if self._rowOf(node.GetID()) >= 0:
            self._model.item(self._rowOf(node.GetID())).setText(node.GetName() or "")
        self._refilter(node)

    def _updateScene(self, _caller=None):
        """qMRMLSceneModel::updateScene: drop all node rows in one block, then insert the scene's nodes again."""
        for node, tag in self._nodeTags.items():
            node.RemoveObserver(tag)
        self._nodeTags = {}
        if self._scene is None:
            self._pre, self._post = [], []  # the scene item goes, with its pre/post items
            self._removeRows(0, self._model.rowCount())
        else:
            self._removeRows(len(self._pre), self._model.rowCount() - len(self._pre) - len(self._post))
            self._invalidateFilter()

    def setMRMLScene(self, scene):
        if scene is self._scene:
            return
        fresh = self._scene is None  # C++ then makes the scene item, which the combo's index sits on
        oldID, previousSceneWasValid = self._combo.itemData(self._combo.currentIndex(), _UID) or "", bool(
            self.nodeCount())
        for tag in self._sceneTags:
            self._scene.RemoveObserver(tag)
        self._sceneTags, self._switching, self._scene = [], True, scene
        self._updateScene()
        self._updateNoneItem()
        self._updateActionItems()
        self._switching, emitted = False, self._emitted
        if scene is not None:
            events = ((scene.NodeAddedEvent, "_onNodeAdded", True),
                      (scene.NodeAboutToBeRemovedEvent, "_onNodeAboutToBeRemoved", True),
                      (scene.EndCloseEvent, "_updateScene", False), (scene.EndImportEvent, "_updateScene", False))
            self._sceneTags = [_observe(self, scene, e, m, c) for e, m, c in events]
        if previousSceneWasValid:
            self.setCurrentNodeID(oldID)
        else:
            node = self._mrmlNode(0) if fresh else self.currentNode()
            newID = self._requestedID or (self._requestedNode.GetID() if self._requestedNode is not None else None) \
                or (node.GetID() if node is not None else "")
            if fresh and scene is not None:
                blocked = self._combo.blockSignals(True)
                self._combo.setCurrentIndex(-1)
                self._combo.blockSignals(blocked)
            self.setCurrentNodeID(newID)
            if fresh and scene is not None and self._emitted == emitted:
                self._emitCurrentNodeChanged()  # in C++ the index always leaves the scene item: one emission
        self._requestedID, self._requestedNode = "", None
        self.setEnabled(scene is not None)

    def mrmlScene(self):
        return self._scene

    def currentNode(self):
        return self._mrmlNode(self._combo.currentIndex())

    def _getCurrentNodeID(self):
        return self.currentNode().GetID() if self.currentNode() is not None else ""

    def setCurrentNode(self, node):
        if self._scene is None:
            self._requestedID, self._requestedNode = "", node
        self._setCurrentNodeIDInternal(node.GetID() if node is not None else "")

    def setCurrentNodeID(self, nodeID):
        if self._scene is None:
            self._requestedID, self._requestedNode = nodeID or "", None
        self._setCurrentNodeIDInternal(nodeID or "")

    def _setCurrentNodeIDInternal(self, nodeID):
        row = self._rowOf(nodeID)
        if row < 0:
            self._viewID = None
            self._combo.setCurrentIndex(0 if self._noneEnabled else -1)
        elif self._viewID != nodeID:  # C++ sends Enter to the view: the combo selects the row, emits activated
            self._viewID = nodeID
            self._combo.setCurrentIndex(row)
            self._emitNodeActivated(self._combo.currentIndex())

    def setCurrentNodeIndex(self, index):
        index = -1 if index >= self.nodeCount() else index
        self._combo.setCurrentIndex(index + 1 if self._noneEnabled else index)

    def _emitCurrentNodeChanged(self, *_):
        if self._switching:
            return
        index = self._combo.currentIndex()
        node = self._mrmlNode(index)
        if node is None and ((not self._noneEnabled and index != -1) or (self._noneEnabled and index != 0)):
            if self.nodeFromIndex(self.nodeCount() - 1) is not None:  # an action item became current
                self.setCurrentNode(self.nodeFromIndex(self.nodeCount() - 1))
        else:
            self._emitted += 1
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(node.GetID() if node is not None else "")

    def _emitNodeActivated(self, index):
        if self._mrmlNode(index) is not None or (self._noneEnabled and index == 0):
            self.nodeActivated.emit(self._mrmlNode(index))

    def _onUserActivated(self, index):
        self._viewID = self._combo.itemData(index, _UID)
        self._emitNodeActivated(index)

    def _refreshIfCurrentNodeHidden(self):
        if self.currentNode() is None:
            self.setCurrentNode(None)

    def nodeCount(self):
        return self._combo.count() - len(self._pre) - len(self._post) if self._scene is not None else 0

    def nodeFromIndex(self, index):
        return self._mrmlNode(index + 1 if self._noneEnabled else index)

    def nodes(self):
        return [self.nodeFromIndex(i) for i in range(self.nodeCount())]

    def nodeTypeLabel(self, nodeType):
        label = self._scene.GetTypeDisplayNameByClassName(nodeType) if self._scene is not None and nodeType else ""
        return label or "node"

    def addAttribute(self, nodeType, attributeName, attributeValue=None):
        self._factoryAttributes[attributeName] = _variantString(attributeValue) or ""
        if nodeType in self._nodeTypes and self._attributes.get(nodeType) != (attributeName, attributeValue):
            self._attributes[nodeType] = (attributeName, attributeValue)
            self._invalidateFilter()

    def addNode(self, nodeType=None):
        nodeType = nodeType or (self._nodeTypes[0] if self._nodeTypes else None)
        if nodeType not in self._nodeTypes or self._scene is None:
            return None
        node = self._scene.CreateNodeByClass(nodeType)  # qMRMLNodeFactory::createNode
        baseName = self._baseNames.get(nodeType, "") or ("" if node.GetName() else node.GetDefaultNodeNamePrefix())
        if baseName:
            node.SetName(self._scene.GetUniqueNameByString(baseName))
        for name, value in self._factoryAttributes.items():
            node.SetAttribute(name, value)
        node = self._scene.AddNode(node)
        if self._selectUponCreation:
            self.setCurrentNode(node)
        self.nodeAddedByUser.emit(node)
        return node

    def removeCurrentNode(self):
        self._scene.RemoveNode(self.currentNode())

    def _set(self, attr, value, update):
        if getattr(self, attr) != value:
            setattr(self, attr, value)
            update()

    def _setBaseName(self, baseName):
        self._baseNames.update(dict.fromkeys(self._nodeTypes, baseName))

    def _prop(attr, kind=bool, update="_invalidateFilter", convert=bool):
        """A Qt property on `attr`; a change calls `update` (the C++ setter's refresh)."""
        return QtCore.Property(kind, lambda s: list(v) if isinstance(v := getattr(s, attr), list) else v,
                               lambda s, v: s._set(attr, convert(v), getattr(s, update)))

    currentNodeID = QtCore.Property(str, _getCurrentNodeID, setCurrentNodeID, notify=currentNodeIDChanged,
                                    designable=False)
    nodeTypes = _prop("_nodeTypes", "QStringList", "_onNodeTypes", lambda v: [t for t in v if t])
    showHidden = _prop("_showHidden")
    showChildNodeTypes = _prop("_showChild")
    hideChildNodeTypes = _prop("_hideChild", "QStringList", convert=list)
    noneEnabled = _prop("_noneEnabled", update="_updateNoneItem")
    noneDisplay = _prop("_noneDisplay", str, "_updateNoneItem", str)
    addEnabled = _prop("_addEnabled", update="_updateActionItems")
    removeEnabled = _prop("_removeEnabled", update="_updateActionItems")
    editEnabled = _prop("_editEnabled", update="_updateActionItems")
    renameEnabled = _prop("_renameEnabled", update="_updateActionItems")
    selectNodeUponCreation = _prop("_selectUponCreation", update="_noUpdate")
    baseName = QtCore.Property(str, lambda s: s._baseNames.get(s._nodeTypes[0], "") if s._nodeTypes else "",
                               _setBaseName)
    del _prop

    def _onNodeTypes(self):
        self._invalidateFilter()
        self._updateActionItems()

    def _noUpdate(self):
        pass


def _variantString(value):
    """QVariant::toString() of an attribute value (None: the null QVariant)."""
    return None if value is None else ("true" if value else "false") if isinstance(value, bool) else str(value)


# ctkUtils.cpp: ctkNameFilterRegExp, ctkValidWildCard and the name filter functions
_NAME_FILTER = re.compile(r"^(.*)\(([a-zA-Z0-9_.*? +;#\-\[\]@\{\}/!<>\$%&=^~:\|]*)\)\Z")
_VALID_WILDCARD = re.compile(r"^[\w\s\.\*\_\~\$\[\]]+\Z")


def nameFilterToExtensions(nameFilter):
    """"Images (*.png *.jpg)" -> ["*.png", "*.jpg"]; a bare wildcard comes back as it is; anything else: []."""
    match = _NAME_FILTER.search(nameFilter)
    if match is None:
        return [nameFilter] if _VALID_WILDCARD.search(nameFilter) else []
    return [e for e in match.group(2).split(" ") if e]


def extensionToRegExp(extension):
    """"*.jpg" -> ".*\\.jpg?$" (sic: the last letter is optional); "" when there is no "*.<word>"."""
    match = re.search(r"\*\.(\w+)", extension)
    return ".*\\." + match.group(1) + "?$" if match else ""


def nameFiltersToRegExpPattern(nameFilters):
    """The pattern of ctk::nameFiltersToRegularExpression: "(a|b|...)", or ".+" when no filter gives one."""
    parts = [r for f in nameFilters for e in nameFilterToExtensions(f) if (r := extensionToRegExp(e))]
    return "(" + "|".join(parts) + ")" if parts else ".+"


class ctkPathLineEdit(QtWidgets.QWidget):
    """Stand-in for the C++ ctkPathLineEdit (CTK/Libs/Widgets/ctkPathLineEdit.h/.cpp, CTK/Libs/Core/ctkUtils.cpp).

    Models: an editable QComboBox (NoInsert) whose line edit has a QRegularExpressionValidator of
    ctk::nameFiltersToRegularExpression(nameFilters) (updateFilter); on each text change currentPathChanged(path) is
    emitted only while the line edit hasAcceptableInput() (a complete match), validInputChanged(bool) when that
    flips (updateHasValidInput); currentPath is the USER property (read: the text; write: setText, unvalidated).
    History in QSettings() under "ctkPathLineEdit/" + (settingKey or objectName): setSettingKey -> retrieveHistory
    (this widget's signals blocked while at most 5 entries refill the list; an empty path takes the newest entry),
    addCurrentPathToHistory (newest first, no duplicates, the settings list uncapped, the list capped at 5, the
    combo's signals not blocked: sic in C++). label, showBrowseButton, browse() (QFileDialog by Files/Writable).
    filters: int of the C++ flag values (class attributes), default AllEntries|NoDotAndDotDot|Readable|Executable
    (0x1057, ctkPathLineEditPrivate's constructor); QUiLoader cannot read a .ui `<set>` for it, so a loaded widget
    keeps the default. It does not take part in validation (C++ passes it to the completer and browse() only).
    Leaves out: the QFileSystemModel completer, options, setting showHistoryButton (it reads true: a combo is always
    used), sizeAdjustPolicy, minimumContentsLength and the size-hint code, setCurrentFileExtension.
    """

    Dirs, Files, Drives, NoSymLinks, AllEntries, TypeMask = 0x001, 0x002, 0x004, 0x008, 0x007, 0x00F
    Readable, Writable, Executable, PermissionMask, Modified = 0x010, 0x020, 0x040, 0x070, 0x080
    Hidden, System, AccessMask, AllDirs, CaseSensitive = 0x100, 0x200, 0x3F0, 0x400, 0x800
    NoDotAndDotDot, NoDot, NoDotDot, NoFilter = 0x1000, 0x2000, 0x4000, -1
    _sMaxHistory, _sCurrentDirectory = 5, ""

    validInputChanged = QtCore.Signal(bool)
    currentPathChanged = QtCore.Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._label, self._nameFilters, self._settingKey, self._hasValidInput = "", [], "", False
        self._filters = self.AllEntries | self.NoDotAndDotDot | self.Readable | self.Executable
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self._validator = QtGui.QRegularExpressionValidator(self)
        self._comboBox = QtWidgets.QComboBox(self)  # createPathLineEditWidget(true)
        self._comboBox.setEditable(True)
        self._comboBox.setInsertPolicy(QtWidgets.QComboBox.InsertPolicy.NoInsert)
        self._comboBox.lineEdit().setValidator(self._validator)
        layout.addWidget(self._comboBox)
        self._updateFilter()
        self.retrieveHistory()
        self.setCurrentPath("")  # the path before; retrieveHistory used the key of the empty object name
        self._comboBox.lineEdit().textChanged.connect(self._setCurrentDirectory)
        self._comboBox.lineEdit().textChanged.connect(self._updateHasValidInput)
        self._browseButton = QtWidgets.QToolButton(self)
        self._browseButton.setText("...")
        self._browseButton.setSizePolicy(Policy.Fixed, Policy.Ignored)
        self._browseButton.setToolTip("Open a dialog")
        self._browseButton.clicked.connect(self.browse)
        layout.addWidget(self._browseButton)
        self.setSizePolicy(Policy.Expanding, Policy.Fixed)
        self.setFocusProxy(self._comboBox.lineEdit())

    def comboBox(self):
        return self._comboBox

    def _updateFilter(self):
        self._validator.setRegularExpression(QtCore.QRegularExpression(nameFiltersToRegExpPattern(self._nameFilters)))

    def _getCurrentPath(self):
        return self._comboBox.lineEdit().text()

    def setCurrentPath(self, path):
        self._comboBox.lineEdit().setText(path)

    def _setCurrentDirectory(self, directory):
        ctkPathLineEdit._sCurrentDirectory = directory

    def _updateHasValidInput(self, *_):
        old, self._hasValidInput = self._hasValidInput, self._comboBox.lineEdit().hasAcceptableInput()
        if self._hasValidInput:
            info = QtCore.QFileInfo(self._getCurrentPath())
            ctkPathLineEdit._sCurrentDirectory = info.absolutePath() if info.isFile() else info.absoluteFilePath()
            self.currentPathChanged.emit(self._getCurrentPath())
        if self._hasValidInput != old:
            self.validInputChanged.emit(self._hasValidInput)

    def _key(self):
        return "ctkPathLineEdit/" + (self._settingKey or self.objectName())

    def retrieveHistory(self):
        path, wasBlocking = self._getCurrentPath(), self.blockSignals(True)
        self._comboBox.clear()
        for entry in _toStringList(QtCore.QSettings().value(self._key())):
            self._comboBox.addItem(entry)
            if self._comboBox.count() >= self._sMaxHistory:
                break
        if not path:
            self.blockSignals(wasBlocking)
            self._comboBox.setCurrentIndex(0)
        else:
            self.setCurrentPath(path)
            self.blockSignals(wasBlocking)

    def addCurrentPathToHistory(self):
        if not self._getCurrentPath():
            return
        settings, pathToAdd = QtCore.QSettings(), self._getCurrentPath()
        history = [p for p in _toStringList(settings.value(self._key())) if p != pathToAdd]
        settings.setValue(self._key(), [pathToAdd, *history])
        wasBlocking = self._comboBox.blockSignals(False)  # sic: "don't fire intermediate events"
        if self._comboBox.findText(pathToAdd) >= 0:
            self._comboBox.removeItem(self._comboBox.findText(pathToAdd))
        while self._comboBox.count() >= self._sMaxHistory:
            self._comboBox.removeItem(self._comboBox.count() - 1)
        self._comboBox.insertItem(0, pathToAdd)
        self._comboBox.setCurrentIndex(0)
        self._comboBox.blockSignals(wasBlocking)

    def browse(self):
        start, dialog = self._getCurrentPath() or ctkPathLineEdit._sCurrentDirectory, QtWidgets.QFileDialog
        if self._filters & self.Files:
            pick = dialog.getSaveFileName if self._filters & self.Writable else dialog.getOpenFileName
            path = pick(self, "Select a file to save " if self._filters & self.Writable else "Open a file", start,
                        ";;".join(self._nameFilters))[0]
        else:
            path = dialog.getExistingDirectory(self, "Select a directory...", start)
        if path:
            self.setCurrentPath(path)

    def _setNameFilters(self, nameFilters):
        self._nameFilters = list(nameFilters)
        self._updateFilter()

    def _setFilters(self, filters):
        self._filters = int(filters)
        self._updateFilter()

    def _setSettingKey(self, key):
        self._settingKey = key
        self.retrieveHistory()

    def _setLabel(self, label):
        self._label = label

    currentPath = QtCore.Property(str, _getCurrentPath, setCurrentPath, user=True)
    label = QtCore.Property(str, lambda s: s._label, _setLabel)
    nameFilters = QtCore.Property("QStringList", lambda s: list(s._nameFilters), _setNameFilters)
    filters = QtCore.Property(int, lambda s: s._filters, _setFilters)
    settingKey = QtCore.Property(str, lambda s: s._settingKey, _setSettingKey)
    showBrowseButton = QtCore.Property(bool, lambda s: s._browseButton.isVisibleTo(s),
                                       lambda s, v: s._browseButton.setVisible(v))
    showHistoryButton = QtCore.Property(bool, lambda s: True)


def _toStringList(value):
    """QVariant::toStringList() of a QSettings value (an INI file gives a one-entry list back as a string)."""
    return [] if value is None else [value] if isinstance(value, str) else [str(v) for v in value]


class ctkCollapsibleButton(QtWidgets.QAbstractButton):
    """Stand-in for the C++ ctkCollapsibleButton (CTK/Libs/Widgets/ctkCollapsibleButton.h; behaviour from CTK's
    ctkCollapsibleButton.cpp).

    Models: checkable and checked, checked == not collapsed (setCollapsed -> setChecked(!c) -> toggled -> collapse);
    collapse() keeps maximumHeight (collapsed: header + collapsedHeight, 14 by default), shows/hides the direct child
    widgets and emits contentsCollapsed(collapsed) once per change. As C++ (setChildVisibility, setVisible) children
    are shown/hidden only once the button is created (shown); a child the user hid stays hidden when expanded, one
    shown while collapsed is hidden again (eventFilter). The header size hint, the contents margin under it, flat,
    and a minimal paintEvent (bevel, arrow, text) so it can be shown offscreen.
    Leaves out: contentsFrameShape/Shadow/LineWidth/MidLineWidth, buttonTextAlignment and indicatorAlignment (left),
    hitButton (the whole button is hit), the mouse-over handling of the C++ paintEvent, re-layout on style change.
    """

    contentsCollapsed = QtCore.Signal(bool)

    def __init__(self, *args):  # (parent=None) or (text, parent=None)
        text = args[0] if args and isinstance(args[0], str) else None
        self._collapsed, self._collapsedHeight, self._flat = False, 14, False
        self._forcing = self._created = False
        super().__init__(args[-1] if args and isinstance(args[-1], QtWidgets.QWidget) else None)
        self.setCheckable(True)
        self.setChecked(True)
        self._maximumHeight = self.maximumHeight()
        self.setSizePolicy(Policy.Minimum, Policy.Preferred)
        self.setBackgroundRole(QtGui.QPalette.ColorRole.Window)
        self.toggled.connect(lambda checked: self._collapse(not checked))
        if text is not None:
            self.setText(text)
        self.setContentsMargins(0, self._buttonSizeHint().height(), 0, 0)

    def setCollapsed(self, collapsed):
        if self.isCheckable():
            self.setChecked(not collapsed)
        else:
            self._collapse(collapsed)

    def _collapse(self, collapsed):
        if collapsed == self._collapsed:
            return
        self._collapsed = collapsed
        if collapsed:
            self._maximumHeight = self.maximumHeight()
            self.setMaximumHeight(self.sizeHint().height())
        else:
            self.setMaximumHeight(self._maximumHeight)
        for child in self.children():
            if isinstance(child, QtWidgets.QWidget):
                self._setChildVisibility(child)
        if not collapsed and (self.parentWidget() is None or self.parentWidget().layout() is None):
            self.resize(self.sizeHint())
        self.updateGeometry()
        self.contentsCollapsed.emit(collapsed)

    def _setChildVisibility(self, child):
        if not self.testAttribute(Attr.WA_WState_Created):
            return
        self._forcing, toParent = True, child.property("visibilityToParent")
        visible = not self._collapsed and (toParent is None or bool(toParent))
        if child.testAttribute(Attr.WA_WState_Created) or not visible:
            child.setVisible(visible)
        if toParent is None or bool(toParent):
            child.setAttribute(Attr.WA_WState_ExplicitShowHide, False)
        self._forcing = False

    def childEvent(self, event):
        child = event.child()
        if event.type() == QtCore.QEvent.Type.ChildAdded and child is not None and child.isWidgetType():
            if child.testAttribute(Attr.WA_WState_ExplicitShowHide) and child.testAttribute(Attr.WA_WState_Hidden):
                child.setProperty("visibilityToParent", False)
            child.installEventFilter(self)
            self._setChildVisibility(child)
        super().childEvent(event)

    def setVisible(self, visible):
        self._forcing = True
        super().setVisible(visible)
        self._forcing = False
        if not self._created and self.testAttribute(Attr.WA_WState_Created):
            self._created = True
            for child in self.children():
                if isinstance(child, QtWidgets.QWidget):
                    self._setChildVisibility(child)

    def eventFilter(self, child, event):
        if not self._forcing and event.type() == QtCore.QEvent.Type.ShowToParent:
            child.setProperty("visibilityToParent", True)
            self._setChildVisibility(child)
        elif not self._forcing and event.type() == QtCore.QEvent.Type.HideToParent:
            child.setProperty("visibilityToParent", False)
        return False

    def _buttonSizeHint(self):
        opt, style, metric = QtWidgets.QStyleOptionButton(), self.style(), QtWidgets.QStyle.PixelMetric
        opt.initFrom(self)
        w = style.pixelMetric(metric.PM_IndicatorWidth, opt, self) + style.pixelMetric(
            metric.PM_CheckBoxLabelSpacing, opt, self)
        text = self.fontMetrics().size(QtCore.Qt.TextFlag.TextShowMnemonic, self.text() or "XXXX")
        size = QtCore.QSize(w + (text.width() if self.text() else 0),
                            max(style.pixelMetric(metric.PM_IndicatorHeight, opt, self), text.height()))
        return style.sizeFromContents(QtWidgets.QStyle.ContentsType.CT_PushButton, opt, size, self)

    def minimumSizeHint(self):
        button = self._buttonSizeHint()
        if self._collapsed:
            return button + QtCore.QSize(0, self._collapsedHeight)
        return button if self.layout() is None else super().minimumSizeHint().expandedTo(button)

    def sizeHint(self):
        button = self._buttonSizeHint() + QtCore.QSize(0, self._collapsedHeight)
        return button if self._collapsed else super().sizeHint().expandedTo(button)

    def paintEvent(self, event):
        painter, style, opt = QtGui.QPainter(self), self.style(), QtWidgets.QStyleOptionButton()
        opt.initFrom(self)
        state = QtWidgets.QStyle.StateFlag
        opt.state |= state.State_Sunken if self.isDown() else state.State_Raised
        if self._flat:
            opt.features |= QtWidgets.QStyleOptionButton.ButtonFeature.Flat
        opt.rect.setHeight(self._buttonSizeHint().height())
        style.drawControl(QtWidgets.QStyle.ControlElement.CE_PushButtonBevel, opt, painter, self)
        size, height = style.pixelMetric(QtWidgets.QStyle.PixelMetric.PM_IndicatorWidth, opt, self), opt.rect.height()
        arrow = QtWidgets.QStyleOption()
        arrow.initFrom(self)
        arrow.rect = QtCore.QRect((height - size) // 2, (height - size) // 2, size, size)
        element = QtWidgets.QStyle.PrimitiveElement
        style.drawPrimitive(element.PE_IndicatorArrowRight if self._collapsed else element.PE_IndicatorArrowDown,
                            arrow, painter, self)
        style.drawItemText(painter, opt.rect.adjusted(height, 0, 0, 0), int(QtCore.Qt.AlignmentFlag.AlignLeft |
                           QtCore.Qt.AlignmentFlag.AlignVCenter), opt.palette, self.isEnabled(), self.text())

    def _setCollapsedHeight(self, height):
        self._collapsedHeight = int(height)
        self.updateGeometry()

    def _setFlat(self, flat):
        self._flat = bool(flat)
        self.update()

    collapsed = QtCore.Property(bool, lambda s: s._collapsed, setCollapsed, notify=contentsCollapsed)
    collapsedHeight = QtCore.Property(int, lambda s: s._collapsedHeight, _setCollapsedHeight)
    flat = QtCore.Property(bool, lambda s: s._flat, _setFlat)


ALL = (qMRMLWidget, qMRMLNodeComboBox, ctkPathLineEdit, ctkCollapsibleButton)


def register_all(loader):
    """Register the stand-ins with a QUiLoader, so `<widget class="qMRMLNodeComboBox">` etc. create them."""
    for cls in ALL:
        loader.registerCustomWidget(cls)
    return loader
