"""The working grid's labels from scores that arrive a few planes at a time, keeping scores only at boundaries.

What ``onto_input_grid`` needs of the class scores is each working-grid voxel's label, each cell's
label (or MIXED), and the scores interpolated inside MIXED cells. All three are built here from the
planes the streamed sliding window hands on: a plane's scores are kept only at the corners of MIXED
cells (a few per cent of the voxels for a trained model), in chunks, and the rest are dropped as
soon as the next plane's labels are known. Memory is then a few bytes per working voxel, whatever
the number of classes, plus classes x boundary voxels.
"""

from __future__ import annotations

import itertools

import numpy as np

from .onto_input_grid import MIXED, cell_labels, labels_of

CHUNK_BYTES = 64 << 20  # kept scores are stored in chunks this large (the system maps pages as they are written),
# then in one tensor of their exact size once the last plane is in, a chunk at a time


class BoundaryScores:
    """Build with ``add`` for every plane in order; then it answers as ``onto_input_grid.DenseScores`` does.

    ``boundaries=False`` keeps the labels only (nearest labels need nothing else).
    """

    def __init__(self, shape: tuple, threshold: float | None, boundaries: bool = True):
        import torch

        self.shape, self.threshold, self.channels, self.boundaries = tuple(shape), threshold, None, boundaries
        self.labels = self.cells = None  # allocated with the first planes, in the dtypes their labels need
        self._index = torch.full(self.shape if boundaries else (0, 0, 0), -1, dtype=torch.int32)  # kept rows, or -1
        self._chunks, self._chunk_rows, self.kept = [], 0, 0  # kept: how many voxels' scores are kept
        self._waiting = None  # the last plane added: its cells need the next plane's labels
        self._mixed_before = None  # the previous plane's MIXED cells, whose corners reach into this plane

    def add(self, first: int, scores) -> None:
        """Scores (C, planes, J, K) of the planes from ``first``, which follow those added before."""
        import torch

        labels = labels_of(scores, self.threshold)
        if self.labels is None:
            self.channels = scores.shape[0]
            self.labels = torch.empty(self.shape, dtype=labels.dtype)
        end = first + scores.shape[1]
        self.labels[first:end] = labels
        if not self.boundaries:
            return
        start = first - 1 if self._waiting is not None else first
        cells = cell_labels(self.labels[start:end])
        if end < self.shape[0]:
            cells = cells[:-1]  # the last plane's cells reach into the next plane, not added yet
        if self.cells is None:
            self.cells = torch.empty(self.shape, dtype=cells.dtype)
        self.cells[start:start + len(cells)] = cells
        for plane in range(start, start + len(cells)):
            self._keep_boundary(plane, self._waiting if plane < first else scores[:, plane - first])
        self._waiting = scores[:, -1].clone() if end < self.shape[0] else None
        if end == self.shape[0]:
            self._compact()

    def labels_at(self, coordinates: list):
        """Labels of the scores interpolated trilinearly at points inside MIXED cells (continuous indices per axis)."""
        import torch

        lower = [np.floor(coordinate).astype(np.int64) for coordinate in coordinates]
        upper = [np.minimum(low + 1, size - 1) for low, size in zip(lower, self.shape, strict=True)]
        ahead = [torch.from_numpy(coordinate - low).float() for coordinate, low in zip(coordinates, lower,
                                                                                       strict=True)]
        total = None
        for corner in itertools.product((False, True), repeat=3):
            index = [torch.from_numpy(up if high else low) for low, up, high in zip(lower, upper, corner, strict=True)]
            weight = torch.ones_like(ahead[0])
            for fraction, high in zip(ahead, corner, strict=True):
                weight *= fraction if high else 1 - fraction
            part = self._rows(self._index[index[0], index[1], index[2]].long()) * weight[:, None]
            total = part if total is None else total.add_(part)
        return labels_of(total.T, self.threshold)

    def _keep_boundary(self, plane: int, scores) -> None:
        """Keeps the scores (C, J, K) of ``plane`` at the corners of MIXED cells, this plane's and the last one's."""
        import torch

        mixed = self.cells[plane] == MIXED
        near = mixed if self._mixed_before is None else mixed | self._mixed_before
        self._mixed_before = mixed
        corners = near.clone()
        corners[1:] |= near[:-1]
        kept = corners.clone()
        kept[:, 1:] |= corners[:, :-1]
        rows = scores[:, kept].T
        self._index[plane][kept] = torch.arange(self.kept, self.kept + len(rows), dtype=torch.int32)
        self._store(rows)

    def _store(self, rows) -> None:
        if not self._chunks:
            self._chunk_rows = max(1, CHUNK_BYTES // (4 * rows.shape[1]))
        done = 0
        while done < len(rows):
            if self.kept == len(self._chunks) * self._chunk_rows:
                self._chunks.append(rows.new_empty((self._chunk_rows, rows.shape[1])))
            at = self.kept % self._chunk_rows
            count = min(len(rows) - done, self._chunk_rows - at)
            self._chunks[-1][at:at + count] = rows[done:done + count]
            done += count
            self.kept += count

    def _compact(self) -> None:
        """The kept scores as one tensor, each chunk freed once copied: never two copies of them at once."""
        if len(self._chunks) <= 1:
            return
        rows = self._chunks[0].new_empty((self.kept, self.channels))
        for number in range(len(self._chunks)):
            start = number * self._chunk_rows
            count = min(self._chunk_rows, self.kept - start)
            rows[start:start + count] = self._chunks[number][:count]
            self._chunks[number] = None
        self._chunks = [rows]

    def _rows(self, rows):
        """The kept scores (points, C) of the given rows."""
        return self._chunks[0].index_select(0, rows)
