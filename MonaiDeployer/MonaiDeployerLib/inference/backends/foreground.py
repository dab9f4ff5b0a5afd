"""The sidecar's optional foreground crop: the model sees only the box around voxels above a threshold.

As SlicerMONAIAuto3DSeg does by default (MONAI's ``CropForeground``, margin 10): a CT's air around
the body then costs neither resampling nor forward passes. Everything outside the box is background.
"""

from __future__ import annotations

import numpy as np

from ...imageio.volume import Volume

SLAB_PLANES = 16


def foreground_box(array: np.ndarray, threshold: float, margin: int) -> tuple[slice, slice, slice] | None:
    """The index box of voxels above ``threshold`` (any channel), ``margin`` voxels wider; None when there are none.

    One pass over slabs of planes: no mask of the whole volume is made.
    """
    hits = [np.zeros(size, dtype=bool) for size in array.shape[:3]]
    for start in range(0, array.shape[2], SLAB_PLANES):
        above = array[:, :, start:start + SLAB_PLANES] > threshold
        if above.ndim == 4:
            above = above.any(axis=3)
        hits[0] |= above.any(axis=(1, 2))
        hits[1] |= above.any(axis=(0, 2))
        hits[2][start:start + SLAB_PLANES] = above.any(axis=(0, 1))
    if not hits[2].any():
        return None
    box = []
    for axis_hits in hits:
        where = np.flatnonzero(axis_hits)
        box.append(slice(max(0, int(where[0]) - margin), min(len(axis_hits), int(where[-1]) + margin + 1)))
    return tuple(box)


def cropped(volume: Volume, box: tuple[slice, slice, slice]) -> Volume:
    """The part of the volume in ``box`` (a view of its voxels), where it lies."""
    ijk_to_ras = volume.ijk_to_ras.copy()
    ijk_to_ras[:3, 3] += volume.ijk_to_ras[:3, :3] @ np.array([part.start for part in box], dtype=np.float64)
    return Volume(volume.array[box], ijk_to_ras)


def pasted(labels: np.ndarray, box: tuple[slice, slice, slice], shape: tuple) -> np.ndarray:
    """The labels of the box on the whole grid, background elsewhere."""
    whole = np.zeros(shape, dtype=labels.dtype)
    whole[box] = labels
    return whole
