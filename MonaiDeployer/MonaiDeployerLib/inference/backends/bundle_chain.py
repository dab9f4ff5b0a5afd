"""A bundle's ``Invertd`` -> ``AsDiscreted(argmax)`` post-processing, run without full-size class scores.

Most segmentation bundles end with ``Activationsd`` (softmax) -> ``Invertd`` -> ``AsDiscreted(argmax)``:
the class probabilities go back through the inverse of the pre-processing at the input's size (in
the pre-processing's float64, 8 bytes x classes x voxels), then argmax. When the pre-processing that
``Invertd`` undoes is reorientation and one linear respacing with border padding (or any respacing when
``Invertd`` asks for nearest), that inverse is
one resampling from the working grid onto the input's grid, and ``onto_input_grid`` gives the labels
argmax would give, a slab at a time. Anything else (a crop, a zoom, another padding, options on
either transform) runs as the bundle wrote it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .onto_input_grid import labels_on_input_grid

REORIENTATIONS = ("Orientation",)
RESAMPLINGS = ("SpatialResample",)  # as Spacing records itself


@dataclass(frozen=True)
class ArgmaxChain:
    """``Invertd`` at ``start`` in the post-processing, ``AsDiscreted(argmax)`` right after it."""

    start: int
    interpolation: str  # "nearest" when Invertd asks for nearest_interp, else "linear"

    @property
    def stop(self) -> int:
        return self.start + 2


def find_argmax_chain(transforms, preprocessing, image_key: str, prediction_key: str) -> ArgmaxChain | None:
    """The chain in a bundle's post-processing transforms, when they invert exactly ``preprocessing`` for one key."""
    from monai.transforms import AsDiscreted, Invertd

    for start, (invert, discrete) in enumerate(itertools.pairwise(transforms)):
        if (type(invert) is Invertd and type(discrete) is AsDiscreted
                and _inverts_only(invert, preprocessing, image_key, prediction_key)
                and _argmax_only(discrete, prediction_key)):
            return ArgmaxChain(start, "nearest" if invert.nearest_interp[0] else "linear")
    return None


def _inverts_only(invert, preprocessing, image_key: str, prediction_key: str) -> bool:
    return (invert.transform is preprocessing and tuple(invert.keys) == (prediction_key,)
            and tuple(invert.orig_keys) == (image_key,) and tuple(invert.post_func) == (None,)
            and tuple(invert.meta_keys) == (None,) and tuple(invert.orig_meta_keys) == (None,))


def _argmax_only(discrete, prediction_key: str) -> bool:
    converter = discrete.converter
    options = [tuple(option) for option in (discrete.argmax, discrete.to_onehot, discrete.threshold, discrete.rounding)]
    return (tuple(discrete.keys) == (prediction_key,) and options == [(True,), (None,), (None,), (None,)]
            and not converter.kwargs and not converter.to_onehot and converter.threshold is None)


def runs_as_one_resampling(image, chain: ArgmaxChain, channels: int) -> bool:
    """True when what the image went through is undone by one resampling onto the input grid.

    Reorientation is exact; a respacing must have border padding (voxels beyond the working grid
    take its edge, as ``onto_input_grid`` does) and linear resampling unless Invertd asks for nearest.
    """
    from monai.utils import TraceKeys

    if channels < 2 or image.pending_operations:
        return False
    names = [operation[TraceKeys.CLASS_NAME] for operation in image.applied_operations]
    if sum(name in RESAMPLINGS for name in names) > 1:  # undoing two resamplings in turn is not one resampling
        return False
    for operation in image.applied_operations:
        name = operation[TraceKeys.CLASS_NAME]
        if name in REORIENTATIONS:
            continue
        info = operation.get(TraceKeys.EXTRA_INFO, {})
        if name in RESAMPLINGS and info.get("padding_mode") == "border" and not operation.get(TraceKeys.LAZY) and (
                chain.interpolation == "nearest" or info.get("mode") == "bilinear"):
            continue
        return False
    return True


def labels_through_chain(prediction, volume, chain: ArgmaxChain):
    """The labels ``Invertd`` then ``AsDiscreted(argmax)`` give, on the input's grid (uint8; int32 past 256 classes)."""
    return labels_on_input_grid(prediction.as_tensor().float().cpu(), prediction.affine.double().cpu().numpy(),
                                volume.shape[:3], volume.ijk_to_ras, interpolation=chain.interpolation)
