"""A bundle's ``Orientationd`` / ``Spacingd`` pre-processing, run a slab at a time with MONAI's own plan.

Eagerly, ``Spacingd`` converts the whole volume to its computation type (float64 by default: 8 bytes
a voxel), flips it first when ``Orientationd`` says so, and builds a grid of coordinates as large as
its output. Here MONAI plans the same steps lazily on a stand-in of the image's shape (no voxels),
and the one resampling they amount to runs slab by slab (``onto_working_grid``) with the plan's
mode, padding and type. The image then carries the operations the eager steps record, so the
bundle's ``Invertd`` undoes them as before. Runs of these steps on the image key alone, with at most
one resampling that reads only neighbours (linear or nearest, border or zero padding), are taken;
anything else runs as written.
"""

from __future__ import annotations

GEOMETRIC_STEPS = ("Orientationd", "Spacingd")
LOCAL_MODES = ("bilinear", "nearest")  # each output voxel reads only its neighbours: a slab's box is enough
LOCAL_PADDINGS = ("border", "zeros")


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
    """``data`` after ``steps`` (a ``geometric_run``), the image resampled a slab at a time; None when that would not
    be the steps' own computation (the image is not a plain ``MetaTensor``, MONAI cannot plan a step lazily, or the
    resampling reads beyond its neighbours: spline orders, reflection padding), and the steps then run as written."""
    import torch
    from monai.data import MetaTensor
    from monai.utils import TraceKeys

    from .onto_working_grid import resampled_in_slabs

    image = data[image_key]
    if not isinstance(image, MetaTensor) or image.pending_operations:
        return None
    plan = _planned(steps, data, image_key)
    if plan is None:
        return None
    resampling = next((operation[TraceKeys.EXTRA_INFO] for operation in plan.pending_operations
                       if operation[TraceKeys.CLASS_NAME] == "SpatialResample"), {})
    mode, padding = resampling.get("mode", "bilinear"), resampling.get("padding_mode", "border")
    if mode not in LOCAL_MODES or padding not in LOCAL_PADDINGS:
        return None
    align_corners = resampling.get("align_corners", False)
    voxels = resampled_in_slabs(
        image.as_tensor(), image.affine, plan.peek_pending_affine(), tuple(int(n) for n in plan.peek_pending_shape()),
        mode=mode, padding_mode=padding, align_corners=False if align_corners == TraceKeys.NONE else align_corners,
        dtype=getattr(torch, resampling.get("dtype", "float32")))
    done = MetaTensor(voxels, affine=plan.peek_pending_affine(), meta=meta_without_affine(plan.meta),
                      applied_operations=[*image.applied_operations, *map(_as_applied, plan.pending_operations)])
    return {**data, image_key: done}


def _planned(steps, data: dict, image_key: str):
    """The image after ``steps`` run lazily on a stand-in of its shape (no voxels), or None when MONAI cannot."""
    import torch
    from monai.data import MetaTensor

    image = data[image_key]
    stand_in = MetaTensor(torch.zeros(1, dtype=image.dtype).expand(image.shape), affine=image.affine,
                          meta=meta_without_affine(image.meta), applied_operations=list(image.applied_operations))
    planned = {**data, image_key: stand_in}
    for step in steps:
        was_lazy = step.lazy
        step.lazy = True
        try:
            planned = step(planned)
        except (NotImplementedError, ValueError, RuntimeError):  # e.g. Spacingd(recompute_affine=True)
            return None
        finally:
            step.lazy = was_lazy
    return planned[image_key]


def meta_without_affine(meta: dict) -> dict:
    """A meta dict for a new ``MetaTensor`` given its affine separately (MONAI warns when both carry one)."""
    return {key: value for key, value in meta.items() if key != "affine"}


def _as_applied(operation: dict) -> dict:
    """A pending operation as the eager step would have recorded it."""
    from monai.utils import LazyAttr, TraceKeys

    applied = {key: value for key, value in operation.items() if key not in (LazyAttr.SHAPE, LazyAttr.AFFINE)}
    applied[TraceKeys.LAZY] = False
    return applied
