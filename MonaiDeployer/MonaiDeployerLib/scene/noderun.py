"""One run from an input volume node to an output node, with no Qt: the panel polls it from a timer."""

from __future__ import annotations

import contextlib

from ..errors import MonaiDeployerError
from ..transport.protocol import Event
from . import mrml

OUTPUT_KINDS = ("labelmap", "segmentation")


class NodeSegmentation:
    """Start at construction; ``poll()`` until ``done``; then ``output_node`` or ``error``.

    ``input_node`` is one volume node (a vector volume's components are channels), or a list of
    scalar volume nodes on one grid, stacked as channels in that order; the first is the reference
    for the output's grid and place. Inputs are only read. The output node is made or filled once
    the worker has answered, so a failed or cancelled run leaves the scene as it was.
    """

    def __init__(self, runner, package, input_node, output_node=None, output_kind: str = "labelmap",
                 name: str | None = None, trust: bool = False, dicom_files: list | None = None):
        if output_node is not None:
            output_kind = "segmentation" if output_node.IsA("vtkMRMLSegmentationNode") else "labelmap"
        if output_kind not in OUTPUT_KINDS:
            raise MonaiDeployerError(f"unknown output kind {output_kind!r} (use labelmap or segmentation)")
        input_nodes = list(input_node) if isinstance(input_node, (list, tuple)) else [input_node]
        volume = mrml.volume_from_nodes(input_nodes)
        self.input_node = input_nodes[0]
        self.output_kind = output_kind
        self.output_node = None
        self.other_nodes = []  # one new node per further output a Deploy app wrote
        self.error = None
        self._requested_node = output_node
        self._name = name
        self._job = runner.submit(package, volume, trust, dicom_files)

    @property
    def done(self) -> bool:
        return self.output_node is not None or self.error is not None

    @property
    def result(self):
        return self._job.result

    @property
    def timings(self) -> dict:
        return self._job.result.timings if self._job.result is not None else {}

    def poll(self, block_seconds: float = 0) -> list:
        if self.done:
            return []
        events = [event for event in self._job.poll(block_seconds) if event.kind in ("progress", "log")]
        if self._job.done:
            events.append(self._finish())
        return events

    def wait(self, progress=None, timeout: float | None = None):
        """Block until the output node exists; raise the run's error."""
        with contextlib.suppress(MonaiDeployerError):  # kept in self.error by _finish
            self._job.wait(timeout=timeout, progress=progress)
        if not self.done:
            self._finish()
        if self.error is not None:
            raise self.error
        return self.output_node

    def cancel(self) -> None:
        if not self.done:
            self._job.cancel()
            self._finish()

    def _finish(self) -> Event:
        if self._job.error is not None:
            self.error = self._job.error
            return Event("error", self._job.stage, None, str(self.error))
        segmentation = self.output_kind == "segmentation"
        place = mrml.result_to_segmentation_node if segmentation else mrml.result_to_labelmap_node
        result = self._job.result
        made = []
        try:
            output_node = place(result, self.input_node, self._requested_node, self._name)
            if self._requested_node is None:
                made.append(output_node)
            for other in result.others:
                made.append(place(other, self.input_node, None, f"{self.input_node.GetName()} {other.name}"))
        except Exception as error:  # ours already say what to do (e.g. overlapping segments into a labelmap)
            for node in made:
                mrml.remove_output_node(node)
            self.error = (error if isinstance(error, MonaiDeployerError)
                          else MonaiDeployerError(f"cannot create the output node: {error}"))
            return Event("error", "output", None, str(self.error))
        self.output_node, self.other_nodes = output_node, made[len(made) - len(result.others):]
        return Event("done", "output", 1.0, f"{self.output_node.GetName()} ready")
