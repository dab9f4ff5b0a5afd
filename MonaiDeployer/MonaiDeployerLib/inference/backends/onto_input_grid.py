"""Class scores on the model's working grid -> labels on the input's grid, without full-size scores.

Linear resampling of the scores followed by argmax (what MONAI's ``SpatialResample`` then argmax
give) costs classes x voxels x 4 bytes at the input's size: 5.9 GB for 14 classes on a 512x512x400
CT. The same labels come out cheaper: a voxel whose eight working-grid neighbours all have the same
label gets that label, because a convex combination of score vectors that share their argmax keeps
it. Scores are interpolated only where the neighbours disagree (the boundaries), one slab of the
input's grid at a time, so memory stays at one label byte per input voxel plus a slab.

``interpolation="nearest"`` takes each input voxel's nearest working-grid label instead (faster,
blockier boundaries), as SlicerMONAIAuto3DSeg does.
"""

from __future__ import annotations

import numpy as np

from . import argmax_over_channels

SLAB_VOXELS = 1 << 19  # input voxels labelled at a time: with 15 classes, 30 MB of scores where all are mixed
MIXED = -1  # a working-grid cell whose corners disagree


def labels_on_input_grid(scores, scores_to_ras: np.ndarray, shape: tuple, ijk_to_ras: np.ndarray,
                         threshold: float | None = None, interpolation: str = "linear") -> np.ndarray:
    """Labels on the grid ``shape``/``ijk_to_ras`` of ``scores`` (C, I, J, K) on ``scores_to_ras``.

    The labels are argmax over channels (first maximum wins), or ``score > threshold`` for one
    channel, of the scores resampled as MONAI resamples them (linear, border padding: voxel centres
    beyond the working grid take its edge). ``scores`` may also be what the working grid's scores
    came to while they were made (``BoundaryScores``): the same ``labels``, ``cells`` and ``labels_at``.
    """
    import torch

    working = scores if hasattr(scores, "labels_at") else DenseScores(scores, threshold)
    to_source = np.linalg.solve(np.asarray(scores_to_ras, dtype=np.float64), np.asarray(ijk_to_ras, dtype=np.float64))
    shape = tuple(int(size) for size in shape)
    result = np.empty(shape, dtype=working.labels.numpy().dtype)
    into = torch.from_numpy(result)  # torch copies a slab in 4 times faster than numpy's strided assignment
    planes_per_slab = max(1, SLAB_VOXELS // (shape[0] * shape[1]))
    if interpolation == "nearest":
        for start in range(0, shape[2], planes_per_slab):
            planes = range(start, min(shape[2], start + planes_per_slab))
            index = [np.rint(coordinate).astype(np.int64)
                     for coordinate in _source_coordinates(to_source, shape, planes, working.shape)]
            into[:, :, planes.start:planes.stop] = _gathered(working.labels, index)
        return result
    for start in range(0, shape[2], planes_per_slab):
        planes = range(start, min(shape[2], start + planes_per_slab))
        coordinates = _source_coordinates(to_source, shape, planes, working.shape)
        corner = [np.floor(coordinate).astype(np.int64) for coordinate in coordinates]
        slab = _gathered(working.cells, corner)  # a new tensor: written in below
        mixed = slab == MIXED
        if bool(mixed.any()):
            where = mixed.numpy()
            points = [np.broadcast_to(coordinate, where.shape)[where] for coordinate in coordinates]
            slab[mixed] = working.labels_at(points).to(slab.dtype)
        into[:, :, planes.start:planes.stop] = slab
    return result


class DenseScores:
    """Class scores held whole on the working grid: their labels, their cells' labels, and grid_sample between."""

    def __init__(self, scores, threshold: float | None):
        import torch

        self.scores = torch.as_tensor(scores).float().cpu().contiguous()
        self.shape, self.channels, self.threshold = tuple(self.scores.shape[1:]), self.scores.shape[0], threshold
        self.labels = labels_of(self.scores, threshold)
        self._cells = None

    @property
    def cells(self):
        if self._cells is None:  # nearest labels never need them
            self._cells = cell_labels(self.labels)
        return self._cells

    def labels_at(self, coordinates: list):
        """Labels of the scores interpolated trilinearly at points (one array of continuous indices per axis).

        Torch's ``grid_sample`` over a grid that lists the points: its trilinear weights, every channel at once.
        """
        import torch

        normalised = [2 * coordinate / max(size - 1, 1) - 1 for coordinate, size in zip(coordinates, self.shape,
                                                                                          strict=True)]
        grid = torch.from_numpy(np.stack(normalised[::-1], axis=-1).astype(np.float32))[None, None, None]
        sampled = torch.nn.functional.grid_sample(self.scores[None], grid, mode="bilinear", padding_mode="border",
                                                  align_corners=True)
        return labels_of(sampled[0, :, 0, 0], self.threshold)


def _gathered(table, index: list):
    """``table[index[0], index[1], index[2]]`` for index arrays broadcastable to one slab.

    When each index runs along its own axis of the slab (aligned grids), three ``index_select``
    copy whole rows instead of gathering voxel by voxel: several times faster.
    """
    import torch

    along = [[axis for axis, size in enumerate(part.shape) if size > 1] for part in index]
    varying = {axes[0]: source_axis for source_axis, axes in enumerate(along) if len(axes) == 1}
    if any(len(axes) > 1 for axes in along) or len(varying) < sum(1 for axes in along if axes):
        return table[tuple(torch.from_numpy(part) for part in index)]
    picked = table
    for source_axis in sorted(range(3), key=lambda axis: index[axis].size):  # the slab's few planes first
        picked = picked.index_select(source_axis, torch.from_numpy(index[source_axis].reshape(-1)))
    unmatched = iter(source_axis for source_axis in range(3) if source_axis not in varying.values())
    order = [varying[slab_axis] if slab_axis in varying else next(unmatched) for slab_axis in range(3)]
    return picked.permute(order)


def labels_of(scores, threshold: float | None):
    """Each working-grid voxel's label: argmax over channels, or the one channel above ``threshold``."""
    import torch

    if scores.shape[0] == 1:
        return (scores[0] > threshold).to(torch.uint8)
    return argmax_over_channels(scores)


def cell_labels(labels):
    """For each working-grid voxel, the label of the cell from it to its +1 neighbours, or MIXED.

    The cell at the last plane of an axis repeats that plane, as border padding does. A wider signed
    type than the labels', so that MIXED never collides with a label.
    """
    import torch

    low = labels.to(torch.int16 if labels.dtype == torch.uint8 else torch.int64)
    high = low.clone()
    for axis in range(3):
        for extreme, pick in ((low, torch.minimum), (high, torch.maximum)):
            ahead = extreme.narrow(axis, 1, extreme.shape[axis] - 1)
            behind = extreme.narrow(axis, 0, extreme.shape[axis] - 1)
            behind.copy_(pick(behind, ahead))
    low[low != high] = MIXED  # where the lowest and highest corner label agree, that is the cell's label
    return low


def _source_coordinates(to_source: np.ndarray, shape: tuple, planes: range, source_shape: tuple) -> list:
    """For each working-grid axis, the continuous index of each target voxel, clipped to the grid.

    Each is broadcastable to the slab (I, J, planes): when the grids are aligned (the usual case: the
    working grid is the input reoriented and respaced) every axis depends on one target axis only and
    stays a line of numbers, so no per-voxel coordinates are ever made.
    """
    target_axes = (np.arange(shape[0]), np.arange(shape[1]), np.asarray(planes))
    coordinates = []
    for axis, size in enumerate(source_shape):
        coordinate = np.full((1, 1, 1), to_source[axis, 3])
        for target_axis, steps in enumerate(target_axes):
            factor = to_source[axis, target_axis]
            if abs(factor) > 1e-9:
                coordinate = coordinate + factor * steps.reshape([-1 if a == target_axis else 1 for a in range(3)])
        coordinates.append(np.clip(coordinate, 0, size - 1))
    return coordinates
