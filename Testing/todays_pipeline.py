"""The TorchScript mode as it was before its grids were bounded in memory: the reference its labels must keep.

MONAI's Orientation and Spacing (float64, its default) on the whole volume, MONAI's sliding window, softmax, every
class score resampled linearly onto the input grid at full size, argmax. Used by the tests and by the
benchmark's real-size agreement row.
"""

from __future__ import annotations

import numpy as np

from MonaiDeployerLib.inference.backends import argmax_over_channels, torchscript


def full_size_reference(scores, scores_to_ras, shape, ijk_to_ras, threshold=None) -> np.ndarray:
    """What the TorchScript mode did before: MONAI resamples every class score onto the input grid, then argmax."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    resample = SpatialResample(mode="bilinear", padding_mode="border", dtype=torch.float32)
    resampled = resample(MetaTensor(torch.as_tensor(scores), affine=torch.as_tensor(scores_to_ras)),
                         dst_affine=torch.as_tensor(ijk_to_ras), spatial_size=shape).as_tensor()
    if resampled.shape[0] == 1:
        return (resampled[0] > threshold).numpy().astype(np.uint8)
    return argmax_over_channels(resampled).numpy()


def todays_labels(model, package, volume) -> np.ndarray:
    """The TorchScript mode as it was: MONAI's Orientation and Spacing (float64) on the whole volume, MONAI's
    sliding window (the sample sidecar sets a window), softmax, every class score resampled onto the input grid,
    argmax."""
    import torch
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import Orientation, ScaleIntensityRange, Spacing

    settings, window = package.settings, package.settings.inference
    image = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32))[None],
                       affine=torch.as_tensor(volume.ijk_to_ras))
    image = Orientation(axcodes=settings.input.orientation, labels=torchscript.RAS_AXIS_LABELS)(image)
    image = Spacing(pixdim=settings.input.spacing, mode="bilinear", padding_mode="border")(image)
    image = ScaleIntensityRange(**settings.input.intensity)(image)
    with torch.inference_mode():
        scores = sliding_window_inference(image.as_tensor()[None].float(), window.roi_size, window.sw_batch_size, model,
                                          overlap=window.overlap, mode=window.mode)[0]
    return full_size_reference(torch.softmax(scores, dim=0), image.affine.numpy(), volume.shape, volume.ijk_to_ras)
