"""A batch from the panel, with no Qt: volume nodes of the scene and the files of a folder through a warm worker,
polled from the panel's timer. A node's result becomes an output node beside it, as a single run's does; a file's
is written into the output folder. Each finished case is a ``BatchRow`` for the panel's results table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import MonaiDeployerError
from ..imageio.volume import read_volume
from ..runs.batch import Batch
from ..runs.cases import Case, find_cases
from ..runs.runner import Result
from . import mrml
from .noderun import place_result


class NodeCase(Case):
    """A volume node as a case: its voxels are copied in the caller's (GUI) thread, as a reader thread must not
    touch MRML, and only when its turn comes, so a batch of many volumes holds a few copies at a time."""

    def __init__(self, node, dicom_files=()):
        super().__init__(node.GetName(), node.GetID(), dicom_files=tuple(dicom_files))
        self.node = node

    def for_reader(self) -> Case:
        return Case(self.name, self.output_stem, dicom_files=self.dicom_files, volume=mrml.volume_from_node(self.node))


@dataclass
class BatchRow:
    """One finished case as the results table shows it; ``output_node`` (a node's case) or ``outputs`` (a file's)
    is what a click shows."""

    case: Case
    ok: bool
    seconds: float
    message: str = ""
    input_node: object = None
    output_node: object = None
    outputs: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    colors: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


class NodeBatch(Batch):
    """A ``Batch`` of ``input_nodes`` and the volume files of ``folder`` (written through ``outputs``, a
    ``CaseOutputs``) whose ``poll()`` gives ``BatchRow``s: started at construction, polled until ``done``.
    ``dicom_files_of(node)``: the DICOM files a node was loaded from, for a Deploy app that reads DICOM."""

    def __init__(self, runner, package, input_nodes, folder: str | None = None, outputs=None,
                 output_kind: str = "labelmap", trust: bool = False, timeout: float | None = None,
                 dicom_files_of=lambda node: ()):
        cases = [NodeCase(node, dicom_files_of(node)) for node in input_nodes]
        if folder:
            found = find_cases([folder], outside=outputs.folder if outputs is not None else None)
            if outputs is not None:
                outputs.check(runner.ready(package, trust), found)
            cases.extend(found)
        self._runner = runner
        self._outputs = outputs
        self._output_kind = output_kind
        self.rows = []
        self.cancelled = False
        super().__init__([runner], package, cases, trust, timeout)

    def poll(self, progress=None) -> list:
        """The rows of the cases finished since the last call; their nodes are made and files written here.
        ``progress(case, event)`` gets the running case's events (its stages, the worker's log lines)."""
        rows = [self._row(outcome) for outcome in super().poll(progress)]
        self.rows.extend(rows)
        if self.done:
            self.close(wait=False)
        return rows

    def cancel(self) -> None:
        """Stop the case in flight and start no other, at once; what finished stays (nodes made, files written)."""
        self.cancelled = self.cancelled or not self.done
        super().cancel()

    def _row(self, outcome) -> BatchRow:
        case = outcome.case
        input_node = getattr(case, "node", None)
        if not outcome.ok:
            return BatchRow(case, False, outcome.seconds, str(outcome.error), input_node)
        result = outcome.result
        row = BatchRow(case, True, outcome.seconds, input_node=input_node, labels=dict(result.labels),
                       colors=dict(result.colors), notes=list(result.notes))
        try:
            if input_node is not None:
                row.output_node, _others = place_result(result, input_node, self._output_kind)
                row.message = row.output_node.GetName()
            else:
                row.outputs = self._outputs.write(outcome, ledger=self._runner.private_folder)
                row.message = ", ".join(row.outputs)
        except MonaiDeployerError as error:
            row.ok, row.message = False, str(error)
        return row


def load_row(scene, row: BatchRow, output_kind: str = "labelmap") -> None:
    """A file case's input and its written result into ``scene`` as nodes (``row.input_node``, ``row.output_node``),
    with the labels and colours of its run."""
    if row.input_node is None or row.input_node.GetScene() is None:  # loaded once, unless removed since
        row.input_node = mrml.volume_node_from_volume(scene, row.case.read(), os.path.basename(row.case.output_stem))
    result = Result(read_volume(row.outputs[0]), row.labels, row.colors)
    row.output_node, _others = place_result(result, row.input_node, output_kind)
