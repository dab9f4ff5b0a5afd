"""TorchScript mode: ``torch.jit.load`` plus the sidecar's pre/post-processing, with MONAI transforms.

The volume is cropped to its foreground, reoriented and resampled as the sidecar asks, scaled, run
whole or by sliding window, and the labels are brought back onto the input's own grid as linear
resampling of the class scores would make them (or nearest, when the sidecar asks), so the labelmap
lies voxel for voxel on the input whatever the model's working grid.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import OrderedDict

import numpy as np

from ...errors import PackageError
from . import (
    Segmented,
    check_input_channels,
    one_line_cause,
    resolve_device,
    sliding_window_count,
)
from .foreground import cropped, foreground_box, pasted
from .onto_input_grid import labels_on_input_grid
from .onto_working_grid import working_grid_image

MODELS_KEPT = 3
RAS_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


class TorchScriptBackend:

    def __init__(self):
        self._models = OrderedDict()

    def run(self, package, volume, device: str, report, work_folder: str) -> Segmented:
        import torch

        settings = package.settings
        timings = {}
        device = resolve_device(device)
        check_input_channels("the model", settings.channels, [], volume)

        report("load_model", None)
        started = time.perf_counter()
        model, cached = self._model(package.path, device)
        if not cached:
            timings["load_model"] = time.perf_counter() - started

        report("preprocess", None)
        started = time.perf_counter()
        crop = settings.input.crop_foreground
        box = None if crop is None else foreground_box(volume.array, crop["threshold"], crop["margin"])
        seen = volume if box is None else cropped(volume, box)  # what the model sees
        image = _preprocess(seen, settings.input)
        timings["preprocess"] = time.perf_counter() - started

        report("inference", 0.0)
        started = time.perf_counter()
        working_shape, working_affine = tuple(image.shape[1:]), image.affine.numpy()
        with torch.inference_mode():
            logits = _infer(model, image.as_tensor()[None].to(device), settings.inference, report)
            del image  # the model's input is not needed any more
            if logits.shape[2:] != working_shape:
                raise PackageError(f"the model's output has spatial shape {tuple(logits.shape[2:])} for an input of "
                                   f"{working_shape}; a segmentation model must keep the shape")
            timings["inference"] = time.perf_counter() - started

            report("postprocess", None)
            started = time.perf_counter()
            scores = logits[0].float().cpu()
            del logits  # one copy of the scores from here on: the activation works in place
            labelmap = _postprocess(scores, working_affine, seen, settings.output)
        if box is not None:
            labelmap = pasted(labelmap, box, volume.shape[:3])
        timings["postprocess"] = time.perf_counter() - started
        labels = package.labels or _default_labels(len(scores))
        return Segmented(labelmap, labels, dict(package.colors), timings, cached)

    def _model(self, path: str, device):
        """A loaded model, reused while the file is unchanged (same size and modification time)."""
        import torch

        status = os.stat(path)
        key = (path, status.st_mtime_ns, status.st_size, str(device))
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key], True
        try:
            model = torch.jit.load(path, map_location=device)
        except Exception as error:
            raise PackageError(f"cannot load TorchScript model {path}: {one_line_cause(error)}") from error
        model.eval()
        self._models[key] = model
        while len(self._models) > MODELS_KEPT:
            self._models.popitem(last=False)
        return model, False


def _preprocess(volume, settings):
    """The volume as the model's input: reoriented and respaced (see ``onto_working_grid``), then scaled."""
    from monai.transforms import ScaleIntensityRange

    image = working_grid_image(volume, settings.orientation, settings.spacing, RAS_AXIS_LABELS)
    if settings.intensity:
        image = ScaleIntensityRange(**settings.intensity)(image)
    return image


def _infer(model, batch, settings, report):
    """One forward pass over the whole volume, or MONAI's sliding window when the sidecar sets a window."""
    from monai.inferers import sliding_window_inference

    roi_size = settings.roi_size
    try:
        if not roi_size:
            logits = model(batch)
        else:
            windows = sliding_window_count(batch.shape[2:], roi_size, settings.overlap)
            batches = max(1, math.ceil(windows / settings.sw_batch_size))
            done = [0]

            def predictor(patches):
                output = model(patches)
                done[0] += 1
                report("inference", min(1.0, done[0] / batches))
                return output

            logits = sliding_window_inference(
                batch, roi_size, settings.sw_batch_size, predictor,
                overlap=settings.overlap, mode=settings.mode,
            )
    except RuntimeError as error:
        raise PackageError(_explain_forward_failure(error)) from error
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if logits.ndim != 5:
        raise PackageError(f"the model returned a {logits.ndim}D tensor; a 3D segmentation model returns "
                           "batch, channel, I, J, K")
    return logits


def _explain_forward_failure(error: RuntimeError) -> str:
    message = str(error)
    channels = re.search(r"to have (\d+) channels, but got (\d+) channels", message)
    if channels:
        return f"the model takes {channels.group(1)} input channels; the input has {channels.group(2)}"
    return f"the model failed on this input: {one_line_cause(error)}"


def _postprocess(scores, working_affine: np.ndarray, volume, settings) -> np.ndarray:
    """Activation on the working grid (in place), then labels back onto the input grid (see ``onto_input_grid``)."""
    if settings.activation == "softmax":
        scores -= scores.amax(dim=0)
        scores.exp_()
        scores /= scores.sum(dim=0)
    elif settings.activation == "sigmoid":
        scores.sigmoid_()
    threshold = settings.threshold if scores.shape[0] == 1 else None
    return labels_on_input_grid(scores, working_affine, volume.shape[:3], volume.ijk_to_ras, threshold,
                                settings.interpolation)


def _default_labels(channels: int) -> dict:
    return {value: f"label_{value}" for value in range(1, max(channels, 2))}
