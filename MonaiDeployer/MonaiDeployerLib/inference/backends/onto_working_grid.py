"""The input volume resampled onto the model's working grid a slab at a time, from its own dtype and order.

MONAI's ``Orientation`` then ``Spacing`` would first make a float copy of the whole volume (float64
by default: 4 bytes per int16 voxel more), flip it (another copy for the LPS-stored arrays most CTs
are) and then resample it with a grid of coordinates as large as the output. Here the two are
planned by MONAI itself (lazily: the same output grid, the same affine), then run as one MONAI
resampling per slab of the working grid, each from just the input planes that slab reads, converted
to float32 as they are read. Memory: the working-grid image plus a slab.
"""

from __future__ import annotations

import itertools

import numpy as np

from . import channel_first_float32, tensor_view

SLAB_VOXELS = 1 << 20  # working-grid voxels resampled at a time


def working_grid_image(volume, orientation: str | None, spacing: list | None, axis_labels):
    """The volume reoriented and respaced (linear, border padding) as a float32 ``MetaTensor`` [C, I, J, K]."""
    import torch
    from monai.data import MetaTensor

    affine = torch.as_tensor(volume.ijk_to_ras, dtype=torch.float64)
    if not orientation and not spacing:
        return MetaTensor(channel_first_float32(volume), affine=affine)
    source = tensor_view(volume.array)
    source = source.movedim(-1, 0) if source.ndim == 4 else source[None]
    target_affine, target_shape = _planned_grid(source, affine, orientation, spacing, axis_labels)
    resampled = resampled_in_slabs(source, affine, target_affine, target_shape)
    return MetaTensor(resampled, affine=target_affine)


def resampled_in_slabs(source, affine, target_affine, target_shape: tuple, mode: str = "bilinear",
                       padding_mode: str = "border", align_corners: bool = False, dtype=None):
    """``source`` [C, I, J, K] (any dtype, any order) on ``affine``, resampled by MONAI onto the target grid.

    One ``SpatialResample`` per slab of the target, each from the box of source planes it reads, so only a slab is
    ever converted to ``dtype``, the type it computes in (float32 by default). The result is float32, as MONAI's.
    """
    import torch
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    dtype = dtype or torch.float32
    affine, target_affine = torch.as_tensor(affine, dtype=torch.float64), torch.as_tensor(target_affine).double()
    to_source = np.linalg.solve(affine.numpy(), target_affine.numpy())
    resample = SpatialResample(mode=mode, padding_mode=padding_mode, align_corners=align_corners, dtype=dtype)
    result = torch.empty((source.shape[0], *target_shape), dtype=torch.float32, device=source.device)
    planes = max(1, SLAB_VOXELS // (target_shape[0] * target_shape[1]))
    for start in range(0, target_shape[2], planes):
        slab_shape = (*target_shape[:2], min(planes, target_shape[2] - start))
        low, high = _source_box(to_source, slab_shape, start, source.shape[1:])
        part = source[(slice(None), *(slice(a, b) for a, b in zip(low, high, strict=True)))].to(dtype)
        part_affine = affine.clone()
        part_affine[:3, 3] += affine[:3, :3] @ torch.as_tensor(low, dtype=torch.float64)
        slab_affine = target_affine.clone()
        slab_affine[:3, 3] += target_affine[:3, 2] * start
        result[..., start:start + slab_shape[2]] = resample(
            MetaTensor(part, affine=part_affine), dst_affine=slab_affine, spatial_size=slab_shape).as_tensor()
    return result


def _planned_grid(source, affine, orientation: str | None, spacing: list | None, axis_labels) -> tuple:
    """(affine, shape) of the grid MONAI's ``Orientation`` then ``Spacing`` would make, planned lazily (no voxels)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    planned = MetaTensor(source, affine=affine)
    if orientation:
        planned = Orientation(axcodes=orientation.upper(), labels=axis_labels, lazy=True)(planned)
    if spacing:
        planned = Spacing(pixdim=spacing, mode="bilinear", padding_mode="border", dtype=torch.float32,
                          lazy=True)(planned)
    return planned.peek_pending_affine().to(torch.float64), tuple(int(size) for size in planned.peek_pending_shape())


def _source_box(to_source: np.ndarray, slab_shape: tuple, start: int, source_shape: tuple) -> tuple[list, list]:
    """The input's index box (low inclusive, high exclusive) that a slab's voxels read, a voxel of margin around."""
    corners = np.array([[i, j, start + k, 1.0] for i, j, k in
                        itertools.product(*((0, size - 1) for size in slab_shape))]) @ to_source.T
    low = np.clip(np.floor(corners[:, :3].min(axis=0)) - 1, 0, np.asarray(source_shape) - 1).astype(int)
    high = np.clip(np.ceil(corners[:, :3].max(axis=0)) + 2, 1, np.asarray(source_shape)).astype(int)
    return low.tolist(), high.tolist()
