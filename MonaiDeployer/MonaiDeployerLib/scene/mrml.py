"""Volume nodes to volumes and back; a result to a labelmap node with named colours, or a segmentation.

The one module (with MonaiDeployer.py) that imports ``slicer``. It works on any ``vtkMRMLScene``, in
the Slicer application or on the ``slicer-core`` wheel. Nothing half-made stays in the scene: nodes
created for a result are removed again if any step fails.
"""

from __future__ import annotations

import contextlib

import numpy as np
import slicer
import vtk

from ..errors import InputError, OutputError
from ..imageio.volume import Volume, label_color, stack_channels

OWN_TABLE_ATTRIBUTE = "MonaiDeployer.LabelTable"


def matrix_to_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def array_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix_to_array(matrix)


def volume_from_node(node) -> Volume:
    """A copy of the node's voxels indexed [i, j, k] with its IJK-to-RAS matrix (the node is not touched).

    A vector volume's components become channels, [i, j, k, C]. The geometry is the node's own; a
    result placed under the same parent transform lines up with it.
    """
    if node is None or node.GetImageData() is None:
        raise InputError("no input volume selected, or the volume has no image data")
    array = slicer.util.arrayFromVolume(node)  # K, J, I (, C)
    spatial_reversed = (2, 1, 0, *range(3, array.ndim))
    return Volume(np.array(array.transpose(spatial_reversed), copy=True), ijk_to_ras(node))


def volume_from_nodes(nodes) -> Volume:
    """Scalar volume nodes on one grid as the channels of one volume, in the given order (one node: as it is).

    They must share the grid and the parent transform, so that channel voxels lie at the same place.
    """
    nodes = list(nodes)
    volume = stack_channels([volume_from_node(node) for node in nodes], [f"'{node.GetName()}'" for node in nodes])
    for node in nodes[1:]:
        if node.GetTransformNodeID() != nodes[0].GetTransformNodeID():
            raise InputError(f"'{node.GetName()}' is under another transform than '{nodes[0].GetName()}'; "
                             "put them under the same one, or harden the transforms and resample first")
    return volume


def volume_node_from_volume(scene, volume: Volume, name: str, labelmap: bool = False):
    """Add a volume to the scene (used by tests, the demo and scripts that start from files)."""
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    _fill_volume_node(node, volume)
    if not labelmap:
        node.CreateDefaultDisplayNodes()
    return node


def _fill_volume_node(node, volume: Volume) -> None:
    node.SetIJKToRASMatrix(array_to_matrix(volume.ijk_to_ras))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array.transpose(2, 1, 0)))


def color_table_node(scene, name: str, labels: dict, colors: dict):
    """A user colour table whose entry names are the label names (Slicer shows them on hover and in segments)."""
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", scene.GenerateUniqueName(name))
    table.SetTypeToUser()
    table.SetAttribute(OWN_TABLE_ATTRIBUTE, "1")
    table.SetNumberOfColors(max(labels, default=0) + 1)
    table.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for value in range(1, table.GetNumberOfColors()):
        if value in labels:
            red, green, blue = label_color(value, colors)
            table.SetColor(value, labels[value], red, green, blue, 1.0)
        else:
            table.SetColor(value, "", 0.0, 0.0, 0.0, 0.0)
    return table


def _new_output_node(class_name: str, reference_node, name: str | None):
    scene = reference_node.GetScene()
    name = name or f"{reference_node.GetName()} segmentation"
    return scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))


def result_to_labelmap_node(result, reference_node, node=None, name: str | None = None):
    """Put a result in a labelmap node (new, or ``node``) on the reference's grid, names in its colour table.

    Overlapping segments are refused: a labelmap holds one label per voxel, so some would be lost.
    """
    if result.overlapping:
        names = ", ".join(name for _, name in sorted(result.labels.items()))
        raise OutputError(f"the model's segments overlap ({names}) and a labelmap holds one label per voxel; "
                          "choose a segmentation output so that none is lost")
    scene = reference_node.GetScene()
    with _removed_on_failure(scene) as created:
        if node is None:
            node = _new_output_node("vtkMRMLLabelMapVolumeNode", reference_node, name)
            created.append(node)
        table = color_table_node(scene, f"{node.GetName()} labels", result.labels, result.colors)
        created.append(table)
        _fill_volume_node(node, result.labelmap)
        display = node.GetDisplayNode()
        if display is None:
            display = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeDisplayNode")
            created.append(display)
            node.SetAndObserveDisplayNodeID(display.GetID())
        previous_table = display.GetColorNode()
        display.SetAndObserveColorNodeID(table.GetID())
        if previous_table is not None and previous_table.GetAttribute(OWN_TABLE_ATTRIBUTE):
            scene.RemoveNode(previous_table)  # the table an earlier run made for this node
        _place_beside(node, reference_node)
        return node


def result_to_segmentation_node(result, reference_node, node=None, name: str | None = None):
    """Put a result in a segmentation node: one named, coloured segment per label, empty ones included.

    Overlapping segments (``result.overlapping``) each come from their own mask, so a voxel in
    several masks is in all those segments. In an existing segmentation, segments with the same
    names are replaced and the others kept.
    """
    scene = reference_node.GetScene()
    with _removed_on_failure(scene) as created:
        if node is None:
            node = _new_output_node("vtkMRMLSegmentationNode", reference_node, name)
            created.append(node)
            node.CreateDefaultDisplayNodes()
        # Under the reference's transform before the import, so that Slicer does not move the voxels.
        _place_beside(node, reference_node)
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        segmentation = node.GetSegmentation()
        for label in result.labels.values():
            segment_id = segmentation.GetSegmentIdBySegmentName(label)
            if segment_id:
                segmentation.RemoveSegment(segment_id)
        (_import_masks if result.overlapping else _import_labelmap)(result, reference_node, node, created)
        for value, label in sorted(result.labels.items()):
            if not segmentation.GetSegmentIdBySegmentName(label):
                segmentation.AddEmptySegment("", label, label_color(value, result.colors))
        return node


def _import_labelmap(result, reference_node, node, created) -> None:
    """Labels into segments through a labelmap whose colour table gives them their names and colours."""
    scene = reference_node.GetScene()
    labelmap = result_to_labelmap_node(result, reference_node, name="MonaiDeployer import")
    table = labelmap.GetDisplayNode().GetColorNode()
    created.extend([labelmap, labelmap.GetDisplayNode(), table])
    if not segmentations_logic(scene).ImportLabelmapToSegmentationNode(labelmap, node):
        raise RuntimeError("Slicer could not import the labelmap into the segmentation")
    _remove_nodes(scene, [labelmap, labelmap.GetDisplayNode(), table])


def _import_masks(result, reference_node, node, created) -> None:
    """Each label's mask into a segment of its own (Slicer gives overlapping segments separate layers)."""
    scene = reference_node.GetScene()
    logic = segmentations_logic(scene)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "MonaiDeployer import")
    created.append(labelmap)
    labelmap.SetAndObserveTransformNodeID(node.GetTransformNodeID())
    segmentation = node.GetSegmentation()
    for value, label in sorted(result.labels.items()):
        segment_id = segmentation.AddEmptySegment("", label, label_color(value, result.colors))
        _fill_volume_node(labelmap, Volume(result.labelmap.array[..., value - 1], result.labelmap.ijk_to_ras))
        segment_ids = vtk.vtkStringArray()
        segment_ids.InsertNextValue(segment_id)
        if not logic.ImportLabelmapToSegmentationNode(labelmap, node, segment_ids):
            raise RuntimeError(f"Slicer could not import the mask of {label} into the segmentation")
    _remove_nodes(scene, [labelmap, labelmap.GetDisplayNode()])


def segmentations_logic(scene):
    """Slicer's segmentations logic; outside the application, one made for ``scene``.

    Making it registers the segmentation converter rules, without which a bare MRML scene cannot
    even create an empty binary-labelmap segment.
    """
    with contextlib.suppress(AttributeError):
        return slicer.modules.segmentations.logic()
    if _LOGICS.get("scene") is not scene:
        logic = slicer.vtkSlicerSegmentationsModuleLogic()
        logic.SetMRMLScene(scene)
        _LOGICS.update(scene=scene, logic=logic)
    return _LOGICS["logic"]


_LOGICS = {}


def _place_beside(node, reference_node) -> None:
    """Same parent transform and same subject-hierarchy folder as the input volume."""
    node.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(reference_node.GetScene())
    reference_item = hierarchy.GetItemByDataNode(reference_node)
    if not reference_item:
        return
    folder = hierarchy.GetItemParent(reference_item)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, folder)
    else:  # Slicer's subject hierarchy logic makes items for new nodes; a bare MRML scene does not
        hierarchy.CreateItem(folder, node)


@contextlib.contextmanager
def _removed_on_failure(scene):
    """Collects the nodes a step creates; if the step fails they leave the scene again."""
    created = []
    try:
        yield created
    except BaseException:
        _remove_nodes(scene, created)
        raise


def remove_output_node(node) -> None:
    """Take an output node out of the scene with its display nodes and the colour table made for it."""
    scene = node.GetScene()
    helpers = [node.GetNthDisplayNode(index) for index in range(node.GetNumberOfDisplayNodes())]
    table = node.GetDisplayNode().GetColorNode() if node.GetDisplayNode() is not None else None
    if table is not None and table.GetAttribute(OWN_TABLE_ATTRIBUTE):
        helpers.append(table)
    _remove_nodes(scene, [node, *helpers])


def _remove_nodes(scene, nodes) -> None:
    for node in nodes:
        if node is not None and scene.IsNodePresent(node):
            scene.RemoveNode(node)


def segment_mask(segmentation_node, segment_id: str, reference_node) -> np.ndarray:
    """One segment as a boolean array [i, j, k] on the reference volume's grid."""
    scene = reference_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "MonaiDeployer export")
    try:
        segment_ids = vtk.vtkStringArray()
        segment_ids.InsertNextValue(segment_id)
        if not segmentations_logic(scene).ExportSegmentsToLabelmapNode(segmentation_node, segment_ids, labelmap,
                                                                  reference_node):
            raise RuntimeError(f"Slicer could not export segment {segment_id}")
        return slicer.util.arrayFromVolume(labelmap).transpose(2, 1, 0) > 0
    finally:
        _remove_nodes(scene, [labelmap, labelmap.GetDisplayNode()])
