"""TorchScript mode: ``torch.jit.load`` plus the sidecar's pre/post-processing, with MONAI transforms.

The volume is cropped to its foreground, reoriented and resampled as the sidecar asks, scaled, run
whole or by sliding window, and the labels are brought back onto the input's own grid as linear
resampling of the class scores would make them (or nearest, when the sidecar asks), so the labelmap
lies voxel for voxel on the input whatever the model's working grid. The sliding window hands on its
planes as they are finished, and only the scores at the working grid's boundaries are kept.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import OrderedDict

from ...errors import PackageError
from . import (
    Segmented,
    check_input_channels,
    one_line_cause,
    resolve_device,
    sliding_window_count,
)
from .boundary_scores import BoundaryScores
from .foreground import cropped, foreground_box, pasted
from .onto_input_grid import DenseScores, labels_on_input_grid
from .onto_working_grid import working_grid_image
from .sliding_window import blended_planes

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
        working_affine = image.affine.numpy()
        with torch.inference_mode():
            batch = image.as_tensor()[None].to(device)
            del image  # the model's input is the batch from here on
            working = _infer(model, batch, settings.inference, settings.output, report)
            del batch
            timings["inference"] = time.perf_counter() - started

            report("postprocess", None)
            started = time.perf_counter()
            labelmap = labels_on_input_grid(working, working_affine, seen.shape[:3], seen.ijk_to_ras,
                                            interpolation=settings.output.interpolation)
        if box is not None:
            labelmap = pasted(labelmap, box, volume.shape[:3])
        timings["postprocess"] = time.perf_counter() - started
        labels = package.labels or _default_labels(working.channels)
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


def _infer(model, batch, settings, output, report):
    """The working grid's labels and scores, activated: one forward pass over the whole volume, or MONAI's sliding
    window when the sidecar sets a window, streamed a few planes at a time (see ``sliding_window``)."""
    shape = tuple(batch.shape[2:])
    if not settings.roi_size:
        scores = _forward(model, batch)[0].float().cpu()
        return DenseScores(_activated(scores, output.activation), output.threshold if len(scores) == 1 else None)
    windows = sliding_window_count(shape, settings.roi_size, settings.overlap)
    batches = max(1, math.ceil(windows / settings.sw_batch_size))
    done = [0]

    def predictor(patches):
        scores = _forward(model, patches)
        done[0] += 1
        report("inference", min(1.0, done[0] / batches))
        return scores

    working = None
    for first, scores in blended_planes(batch, settings.roi_size, settings.sw_batch_size, predictor,
                                        settings.overlap, settings.mode):
        scores = _activated(scores.float().cpu(), output.activation)
        if working is None:  # nearest labels need no scores between voxels
            working = BoundaryScores(shape, output.threshold if len(scores) == 1 else None,
                                     boundaries=output.interpolation == "linear")
        working.add(first, scores)
    return working


def _forward(model, inputs):
    """The model's scores (batch, C, I, J, K) for ``inputs``; a clear one-line error for anything else."""
    try:
        output = model(inputs)
    except RuntimeError as error:
        raise PackageError(_explain_forward_failure(error)) from error
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.ndim != 5:
        raise PackageError(f"the model returned a {output.ndim}D tensor; a 3D segmentation model returns "
                           "batch, channel, I, J, K")
    if tuple(output.shape[2:]) != tuple(inputs.shape[2:]) or len(output) != len(inputs):
        raise PackageError(f"the model's output has shape {tuple(output.shape)} for an input of "
                           f"{tuple(inputs.shape)}; a segmentation model must keep the shape")
    return output


def _explain_forward_failure(error: RuntimeError) -> str:
    message = str(error)
    channels = re.search(r"to have (\d+) channels, but got (\d+) channels", message)
    if channels:
        return f"the model takes {channels.group(1)} input channels; the input has {channels.group(2)}"
    return f"the model failed on this input: {one_line_cause(error)}"


def _activated(scores, activation: str):
    """The activation, in place on scores (C, ...) on the working grid."""
    if activation == "softmax":
        scores -= scores.amax(dim=0)
        scores.exp_()
        scores /= scores.sum(dim=0)
    elif activation == "sigmoid":
        scores.sigmoid_()
    return scores


def _default_labels(channels: int) -> dict:
    return {value: f"label_{value}" for value in range(1, max(channels, 2))}
