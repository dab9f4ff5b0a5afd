"""Bundle mode: a MONAI Bundle's own inference config (pre-processing, network, inferer, post-processing).

The volume goes in as the ``MetaTensor`` the bundle's loader would have made, with its RAS affine;
the bundle's ``Invertd`` then brings the prediction back onto the input grid, and when a bundle does
not invert, the result is resampled (nearest) onto it. A built pipeline is kept per bundle content
and device, so a warm run pays neither config parsing nor weight loading.
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict

import numpy as np

from ...environment.home import home_folder
from ...environment.optional_packages import install_hint
from ...errors import PackageError
from ...packages.bundle_files import unpacked_root
from . import (
    Segmented,
    argmax_over_channels,
    channel_first_float32,
    check_input_channels,
    one_line_cause,
    resample_nearest,
    resolve_device,
    sliding_window_count,
)
from .bundle_chain import find_argmax_chain, labels_through_chain, runs_as_one_resampling
from .bundle_config import LoadedImaged, in_memory_transforms, instantiate, parse_inference_config
from .bundle_geometry import geometric_run, meta_without_affine, run_in_slabs

PIPELINES_KEPT = 2
PRED = "pred"
CONFIG_LABEL_KEYS = ("label_names", "labels", "class_names")


class BundleBackend:

    def __init__(self):
        self._pipelines = OrderedDict()

    def run(self, package, volume, device: str, report, work_folder: str) -> Segmented:
        device = resolve_device(device)
        settings = package.settings
        check_input_channels("the bundle", settings.channels, settings.channel_names, volume)
        report("load_model", None)
        started = time.perf_counter()
        pipeline, cached = self._pipeline(package, device)
        timings = {} if cached else {"load_model": time.perf_counter() - started}
        segmented = pipeline.segment(volume, report)
        segmented.timings = {**timings, **segmented.timings}
        segmented.model_cached = cached
        return segmented

    def _pipeline(self, package, device):
        key = (package.path, package.content_hash, str(device))
        if key in self._pipelines:
            self._pipelines.move_to_end(key)
            return self._pipelines[key], True
        pipeline = BundlePipeline(package, device)
        self._pipelines[key] = pipeline
        while len(self._pipelines) > PIPELINES_KEPT:
            self._pipelines.popitem(last=False)
        return pipeline, False


class BundlePipeline:
    """One bundle's instantiated transforms, inferer and network on one device."""

    def __init__(self, package, device):
        config_name = package.settings.inference_config
        if not config_name:
            raise PackageError(f"{package.name} has no inference config (configs/inference.json or inference.yaml)")
        form = package.settings.form
        self.root = unpacked_root(package.path, form, package.content_hash, os.path.join(home_folder(), "bundles"))
        self.device = device
        self.package = package
        parser = parse_inference_config(self.root, config_name, device)
        self.made_with = package.settings.made_with
        self.preprocessing = in_memory_transforms(
            instantiate(parser, "preprocessing", "its pre-processing", self.made_with), "pre")
        self.postprocessing = in_memory_transforms(
            instantiate(parser, "postprocessing", "its post-processing", self.made_with), "post")
        self.inferer = instantiate(parser, "inferer", "how the network is applied", self.made_with)
        self.image_key = self._image_key(parser)
        self.network = self._network(parser, package.path if form == "torchscript" else None)
        self.amp = _evaluator_uses_amp(parser) and device.type == "cuda"
        self.labels = package.labels or _config_labels(parser)
        self.argmax_chain = find_argmax_chain(self.postprocessing.transforms, self.preprocessing, self.image_key, PRED)

    def _image_key(self, parser) -> str:
        loaders = [transform for transform in self.preprocessing.transforms if isinstance(transform, LoadedImaged)]
        if loaders:
            return loaders[0].keys[0]
        return str(parser.get("image_key", "image"))

    def _network(self, parser, embedded_in: str | None):
        """``models/model.ts`` (or the TorchScript file the configs came in), else ``network_def`` + ``model.pt``."""
        import torch

        scripted = embedded_in or os.path.join(self.root, "models", "model.ts")
        weights = os.path.join(self.root, "models", "model.pt")
        if os.path.isfile(scripted):
            try:
                network = torch.jit.load(scripted, map_location=self.device)
            except Exception as error:
                raise PackageError(f"cannot load the bundle's TorchScript network: {one_line_cause(error)}") from error
        elif os.path.isfile(weights):
            network = instantiate(parser, "network_def", "the network's architecture", self.made_with)
            if not isinstance(network, torch.nn.Module):
                raise PackageError(f"the bundle's network_def built a {type(network).__name__}, not a torch module")
            network.load_state_dict(_state_dict(weights, network))
        else:
            raise PackageError("the bundle has no network: neither models/model.ts nor models/model.pt")
        return network.to(self.device).eval()

    def segment(self, volume, report) -> Segmented:
        import torch

        timings = {}
        report("preprocess", None)
        started = time.perf_counter()
        data = self._preprocess({self.image_key: _as_loaded_image(volume)})
        timings["preprocess"] = time.perf_counter() - started

        report("inference", 0.0)
        started = time.perf_counter()
        with torch.no_grad():
            prediction = self._infer(data[self.image_key], report)
        timings["inference"] = time.perf_counter() - started

        report("postprocess", None)
        started = time.perf_counter()
        with torch.no_grad():
            labelmap, labels = self._postprocess(data, prediction, volume)
        timings["postprocess"] = time.perf_counter() - started
        return Segmented(labelmap, labels, timings=timings)

    def _preprocess(self, data: dict) -> dict:
        """The bundle's pre-processing; its reorientation and respacing a slab at a time (``bundle_geometry``)."""
        transforms = self.preprocessing.transforms
        index = 0
        while index < len(transforms):
            stop = geometric_run(transforms, index, self.image_key)
            done = self._in_slabs(transforms[index:stop], data) if stop > index else None
            if done is not None:
                data, index = done, stop
                continue
            data = self._run_transforms(self.preprocessing, data, "pre", part=slice(index, index + 1))
            index += 1
        return data

    def _in_slabs(self, steps, data: dict) -> dict | None:
        try:
            return run_in_slabs(steps, data, self.image_key)
        except Exception as error:  # MONAI's planning of the bundle's own steps can raise anything
            names = ", ".join(type(step).__name__ for step in steps)
            raise PackageError(f"the bundle's preprocessing failed ({names}): {one_line_cause(error)}") from error

    def _run_transforms(self, compose, data: dict, kind: str, watch=None, part: slice = slice(None)) -> dict:
        from monai.transforms import apply_transform

        for transform in compose.transforms[part]:
            try:
                data = apply_transform(transform, data, compose.map_items, compose.unpack_items)
            except Exception as error:  # a bundle's transform can raise anything
                raise PackageError(f"the bundle's {kind}processing failed ({type(transform).__name__}): "
                                   f"{install_hint(error) or one_line_cause(error)}") from error
            if watch is not None:
                watch(data)
        return data

    def _infer(self, image, report):
        import torch
        from monai.data import MetaTensor
        from monai.inferers import SlidingWindowInferer

        batches = None
        if type(self.inferer) is SlidingWindowInferer:
            windows = sliding_window_count(image.shape[1:], self.inferer.roi_size, self.inferer.overlap)
            batches = max(1, math.ceil(windows / self.inferer.sw_batch_size))
        calls = [0]

        def network(inputs, *arguments, **keywords):
            output = self.network(inputs, *arguments, **keywords)
            calls[0] += 1
            report("inference", min(1.0, calls[0] / batches) if batches else None)
            return output

        inputs = image[None].to(self.device)
        try:
            if self.amp:
                with torch.autocast("cuda"):
                    prediction = self.inferer(inputs, network)
            else:
                prediction = self.inferer(inputs, network)
        except Exception as error:
            raise PackageError(f"the bundle's network failed on this input: "
                               f"{install_hint(error) or one_line_cause(error)}") from error
        if isinstance(prediction, (tuple, list)):
            prediction = prediction[0]
        return MetaTensor(prediction[0], meta=image.meta, applied_operations=image.applied_operations)

    def _postprocess(self, data: dict, prediction, volume):
        """The bundle's post-processing; overlapping channels are taken before a step merges them into one.

        Its ``Invertd`` -> ``AsDiscreted(argmax)`` runs without full-size class scores when it can (``bundle_chain``).
        """
        overlap = self.package.outputs_overlap
        channels = len(self.package.labels) if overlap else 0
        last_masks = {}

        def keep_masks(item):
            value = item.get(PRED)
            if overlap and value is not None and value.shape[0] == channels and _is_binary(value):
                last_masks["pred"] = value

        data = {**data, PRED: prediction}
        chain = None if overlap else self.argmax_chain
        rest = 0  # the first post-processing step still to run as written
        if chain is not None:
            data = self._run_transforms(self.postprocessing, data, "post", part=slice(None, chain.start))
            rest = chain.start
            if runs_as_one_resampling(data[self.image_key], chain, data[PRED].shape[0]):
                labelmap = labels_through_chain(data[PRED], volume, chain)
                if chain.stop == len(self.postprocessing.transforms):
                    return labelmap, self._label_names(labelmap)
                data[PRED] = _discrete_output(labelmap, volume, data[self.image_key])
                rest = chain.stop
        data = self._run_transforms(self.postprocessing, data, "post", keep_masks, part=slice(rest, None))
        output = last_masks.get("pred", data.get(PRED))
        if output is None:
            raise PackageError("the bundle's post-processing left no 'pred' in its output")
        output = _on_input_grid(output, volume)
        if overlap and "pred" in last_masks:
            masks = np.moveaxis(output.cpu().numpy() > 0.5, 0, -1).astype(np.uint8)
            return masks, dict(self.labels)
        labelmap = _to_labelmap(output)
        return labelmap, self._label_names(labelmap)

    def _label_names(self, labelmap: np.ndarray) -> dict:
        return self.labels or {int(value): f"label_{int(value)}" for value in np.unique(labelmap) if value}


def _discrete_output(labelmap: np.ndarray, volume, image):
    """The labels as ``AsDiscreted`` leaves them after ``Invertd``, for post-processing steps that follow."""
    import torch
    from monai.data import MetaTensor

    return MetaTensor(torch.from_numpy(labelmap)[None].float(), affine=torch.as_tensor(volume.ijk_to_ras),
                      meta=meta_without_affine(image.meta))


def _state_dict(path: str, network) -> dict:
    """``model.pt`` as a state dict (plain, or under "model" as MONAI's CheckpointSaver writes it), tensors only."""
    import pickle

    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise PackageError("models/model.pt holds more than weights (a whole pickled model or other objects); "
                           "refused, as loading it would run code; save model.state_dict() instead") from error
    except Exception as error:
        raise PackageError(f"cannot read models/model.pt: {one_line_cause(error)}") from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict):
        raise PackageError(f"models/model.pt holds a {type(checkpoint).__name__}, not a state dict")
    expected = set(network.state_dict())
    missing, unexpected = sorted(expected - set(checkpoint)), sorted(set(checkpoint) - expected)
    if missing or unexpected:
        raise PackageError(f"models/model.pt does not fit the network_def: {len(missing)} missing keys "
                           f"({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}), {len(unexpected)} "
                           f"unexpected ({', '.join(unexpected[:3])}{'...' if len(unexpected) > 3 else ''})")
    return checkpoint


def _as_loaded_image(volume):
    """The ``MetaTensor`` MONAI's LoadImaged would make of this volume read from a NIfTI file."""
    import torch
    from monai.data import MetaTensor

    channel_dim = 0 if volume.array.ndim == 4 else "no_channel"  # several channels: as LoadImaged stacks files
    affine = torch.as_tensor(volume.ijk_to_ras, dtype=torch.float64)
    meta = {"original_affine": affine.clone(), "spatial_shape": np.asarray(volume.shape[:3]),
            "original_channel_dim": channel_dim, "filename_or_obj": "input-volume", "space": "RAS"}
    array = channel_first_float32(volume)
    return MetaTensor(array if volume.array.ndim == 4 else array[0], affine=affine, meta=meta)


def _is_binary(tensor) -> bool:
    import torch

    return bool(torch.all((tensor == 0) | (tensor == 1)))


def _on_input_grid(output, volume):
    """The output (channel first) on the input's grid: as it is when the bundle inverted its resampling."""
    import torch
    from monai.data import MetaTensor

    affine = torch.as_tensor(volume.ijk_to_ras, dtype=torch.float64)
    output_affine = output.affine if isinstance(output, MetaTensor) else affine
    if tuple(output.shape[1:]) == volume.shape[:3] and torch.allclose(output_affine.double().cpu(), affine, atol=1e-4):
        return output.as_tensor() if isinstance(output, MetaTensor) else output
    if not isinstance(output, MetaTensor):
        raise PackageError(f"the bundle's output has shape {tuple(output.shape[1:])} and no geometry; "
                           f"the input has {volume.shape[:3]}")
    return resample_nearest(output.float().cpu(), volume)


def _to_labelmap(output) -> np.ndarray:
    """Label values from a one-channel output, or argmax over probabilities/one-hot channels.

    A one-channel output that is not whole numbers is a probability (thresholded at 0.5) or, when it goes beyond
    1 and never below 0, label values the bundle interpolated (``Invertd`` with bilinear resampling after argmax,
    as prostate_mri_anatomy does), rounded to the nearest label.
    """
    import torch

    output = output.float().cpu()
    if output.shape[0] > 1:
        return argmax_over_channels(output).numpy()
    values = output[0]
    if not torch.equal(values, torch.round(values)):
        values = torch.round(values) if values.max() > 1 and values.min() >= 0 else (values > 0.5).float()
    if values.min() < 0 or values.max() > np.iinfo(np.int16).max:
        raise PackageError(f"the bundle's output holds values from {values.min():g} to {values.max():g}, "
                           "not label values")
    return values.numpy().astype(np.uint8 if values.max() < 256 else np.int16)


def _evaluator_uses_amp(parser) -> bool:
    evaluator = parser.get("evaluator", {})
    return isinstance(evaluator, dict) and evaluator.get("amp") is True


def _config_labels(parser) -> dict:
    """Label names a config declares itself (``label_names``, ``labels`` or ``class_names``), background left out."""
    for key in CONFIG_LABEL_KEYS:
        declared = parser.get(key)
        if isinstance(declared, list):
            declared = dict(enumerate(declared))
        if isinstance(declared, dict):
            labels = {}
            for value, name in declared.items():
                if isinstance(name, int) and not isinstance(value, int):
                    value, name = name, value  # {"organ": 1} form
                if str(value).isdigit() and str(name).strip().lower() != "background":
                    labels[int(value)] = str(name)
            if labels:
                return labels
    return {}
