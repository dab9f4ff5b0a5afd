"""One run from an input volume node to an output node, with no Qt: the panel polls it from a timer."""

from __future__ import annotations

from ..choices import OUTPUT_KINDS
from ..errors import MonaiDeployerError
from ..transport.job import Job
from . import mrml


class NodeSegmentation(Job):
    """A run whose result is an output node: started at construction; ``poll()`` until ``done``, or ``wait()``.

    ``input_node`` is one volume node (a vector volume's components are channels), or a list of
    scalar volume nodes on one grid, stacked as channels in that order; the first is the reference
    for the output's grid and place. Inputs are only read. The output node is made or filled once
    the worker has answered, so a failed or cancelled run leaves the scene as it was.
    """

    def __init__(self, runner, package, input_node, output_node=None, output_kind: str = "labelmap",
                 name: str | None = None, trust: bool = False, dicom_files: list | None = None):
        super().__init__()
        if output_node is not None:
            output_kind = "segmentation" if output_node.IsA("vtkMRMLSegmentationNode") else "labelmap"
        if output_kind not in OUTPUT_KINDS:
            raise MonaiDeployerError(f"unknown output kind {output_kind!r} (use labelmap or segmentation)")
        input_nodes = list(input_node) if isinstance(input_node, (list, tuple)) else [input_node]
        volume = mrml.volume_from_nodes(input_nodes)
        self.input_node = input_nodes[0]
        self.output_kind = output_kind
        self.run_result = None  # the runner's Result, once read
        self.other_nodes = []  # one new node per further output a Deploy app wrote
        self._requested_node = output_node
        self._name = name
        runner.submit(package, volume, trust, dicom_files, job=self).then(self._place, "output")

    @property
    def output_node(self):
        return self.result

    @property
    def timings(self) -> dict:
        return self.run_result.timings if self.run_result is not None else {}

    def _place(self, result):
        """The output node (made, or the one asked for, filled) and one new node per further output."""
        self.run_result = result
        output_node, self.other_nodes = place_result(result, self.input_node, self.output_kind, self._requested_node,
                                                     self._name)
        return output_node


def place_result(result, input_node, output_kind: str = "labelmap", requested_node=None, name: str | None = None):
    """A result as nodes beside ``input_node``: the output node (made, or ``requested_node`` filled) and one new
    node per further output; nothing is left made if any of them fails."""
    place = mrml.result_to_segmentation_node if output_kind == "segmentation" else mrml.result_to_labelmap_node
    made = []
    try:
        output_node = place(result, input_node, requested_node, name)
        if requested_node is None:
            made.append(output_node)
        for other in result.others:
            made.append(place(other, input_node, None, f"{input_node.GetName()} {other.name}"))
    except Exception as error:  # ours already say what to do (e.g. overlapping segments into a labelmap)
        for node in made:
            mrml.remove_output_node(node)
        if isinstance(error, MonaiDeployerError):
            raise
        raise MonaiDeployerError(f"cannot create the output node: {error}") from error
    return output_node, made[len(made) - len(result.others):]
