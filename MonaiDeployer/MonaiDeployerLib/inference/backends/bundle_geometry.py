"""A bundle's ``Orientationd`` / ``Spacingd`` pre-processing, run a slab at a time with MONAI's own plan.

Eagerly, ``Spacingd`` converts the whole volume to its computation type (float64 by default: 8 bytes
a voxel), flips it first when ``Orientationd`` says so, and builds a grid of coordinates as large as
its output. Here MONAI plans the same steps lazily on a stand-in of the image's shape (no voxels),
and the one resampling they amount to runs slab by slab (``onto_working_grid``) with the plan's
mode, padding and type. The image then carries the operations the eager steps record, so the
bundle's ``Invertd`` undoes them as before. Runs of these steps on the image key alone, with at most
one resampling, are taken; anything else runs as written.
"""

from __future__ import annotations

GEOMETRIC_STEPS = ("Orientationd", "Spacingd")
LAZY_ONLY_KEYS = ("lazy_shape", "lazy_affine")


def geometric_run(transforms, start: int, image_key: str) -> int:
    """The end (exclusive) of the run of plain reorientation/respacing steps on the image from ``start``."""
    stop, resamplings = start, 0
    while stop < len(transforms) and type(transforms[stop]).__name__ in GEOMETRIC_STEPS \
            and tuple(transforms[stop].keys) == (image_key,):
        resamplings += type(transforms[stop]).__name__ == "Spacingd"
        if resamplings > 1:  # two resamplings in a row are not one resampling
            break
        stop += 1
    return stop


def run_in_slabs(steps, data: dict, image_key: str) -> dict | None:
    """``data`` after ``steps`` (a ``geometric_run``), the image resampled a slab at a time; None when the image is
    not a plain ``MetaTensor`` (the steps then run as written)."""
    import torch
    from monai.data import MetaTensor
    from monai.utils import TraceKeys

    from .onto_working_grid import resampled_in_slabs

    image = data[image_key]
    if not isinstance(image, MetaTensor) or image.pending_operations:
        return None
    stand_in = MetaTensor(torch.zeros(1, dtype=image.dtype).expand(image.shape), affine=image.affine,
                          meta=dict(image.meta), applied_operations=list(image.applied_operations))
    planned = {**data, image_key: stand_in}
    for step in steps:
        was_lazy = step.lazy
        step.lazy = True
        try:
            planned = step(planned)
        finally:
            step.lazy = was_lazy
    plan = planned[image_key]
    resampling = next((operation[TraceKeys.EXTRA_INFO] for operation in plan.pending_operations
                       if operation[TraceKeys.CLASS_NAME] == "SpatialResample"), {})
    computed_in = getattr(torch, resampling.get("dtype", "float32"))
    align_corners = resampling.get("align_corners", False)
    voxels = resampled_in_slabs(
        image.as_tensor(), image.affine, plan.peek_pending_affine(), tuple(int(n) for n in plan.peek_pending_shape()),
        mode=resampling.get("mode", "bilinear"), padding_mode=resampling.get("padding_mode", "border"),
        align_corners=False if align_corners == TraceKeys.NONE else align_corners, dtype=computed_in)
    done = MetaTensor(voxels, affine=plan.peek_pending_affine(), meta={**plan.meta},
                      applied_operations=[*image.applied_operations, *map(_as_applied, plan.pending_operations)])
    return {**planned, image_key: done}


def _as_applied(operation: dict) -> dict:
    """A pending operation as the eager step would have recorded it."""
    from monai.utils import TraceKeys

    applied = {key: value for key, value in operation.items() if key not in LAZY_ONLY_KEYS}
    applied[TraceKeys.LAZY] = False
    return applied
