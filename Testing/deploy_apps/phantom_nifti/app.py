"""Phantom organ and lesion segmentation as a MONAI Deploy App SDK application, on NIfTI files.

Shaped like the LungAIR app of the blog MonaiDeployer starts from: a loader, pre-processing,
inference, post-processing and a writer operator, each a Holoscan operator, run as

    python app.py -i INPUT_FOLDER -o OUTPUT_FOLDER -m MODEL.ts

It reads the first ``*.nii.gz`` (or ``*.nii``) in the input folder and writes
``<name>_seg.nii.gz`` on the same grid into the output folder. The model is the phantom UNet
(MonaiDeployer/Resources/SampleModels/PhantomUNet.ts); the pre-processing is its sidecar's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Fragment, Operator, OperatorSpec

SPACING_MM = (1.5, 1.5, 1.5)
INTENSITY = {"a_min": -200.0, "a_max": 300.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
WINDOW = {"roi_size": (64, 64, 64), "sw_batch_size": 1, "overlap": 0.25, "mode": "gaussian"}


class NiftiLoaderOperator(Operator):
    """Emits the first NIfTI image of the input folder as a MONAI MetaTensor (RAS affine kept)."""

    def __init__(self, fragment: Fragment, *args, input_folder: Path, **kwargs):
        self.input_folder = Path(input_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.output("image")

    def compute(self, op_input, op_output, context):
        from monai.transforms import LoadImage

        found = sorted(self.input_folder.glob("*.nii.gz")) + sorted(self.input_folder.glob("*.nii"))
        if not found:
            raise FileNotFoundError(f"no .nii or .nii.gz file in {self.input_folder}")
        image = LoadImage(image_only=True, ensure_channel_first=True)(str(found[0]))
        op_output.emit(image, "image")


class PreprocessOperator(Operator):
    """RAS orientation, 1.5 mm spacing and intensity window: what the network was trained on."""

    def __init__(self, fragment: Fragment, *args, transforms, **kwargs):
        self.transforms = transforms
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("image")
        spec.output("image")

    def compute(self, op_input, op_output, context):
        op_output.emit(self.transforms(op_input.receive("image")), "image")


class InferenceOperator(Operator):
    """The TorchScript network over the volume by sliding window; emits class probabilities."""

    def __init__(self, fragment: Fragment, *args, app_context: AppContext, **kwargs):
        self.model_path = app_context.model_path
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("image")
        spec.output("probabilities")

    def compute(self, op_input, op_output, context):
        import torch
        from monai.data import MetaTensor
        from monai.inferers import sliding_window_inference

        image = op_input.receive("image")
        model = torch.jit.load(self.model_path, map_location="cpu").eval()
        with torch.inference_mode():
            logits = sliding_window_inference(image.as_tensor()[None], WINDOW["roi_size"], WINDOW["sw_batch_size"],
                                              model, overlap=WINDOW["overlap"], mode=WINDOW["mode"])
        probabilities = torch.softmax(logits[0], dim=0)
        op_output.emit(MetaTensor(probabilities, meta=image.meta, applied_operations=image.applied_operations),
                       "probabilities")


class PostprocessOperator(Operator):
    """Probabilities back onto the input grid (inverting the pre-processing), then argmax."""

    def __init__(self, fragment: Fragment, *args, transforms, **kwargs):
        self.transforms = transforms
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("probabilities")
        spec.output("labels")

    def compute(self, op_input, op_output, context):
        probabilities = op_input.receive("probabilities")
        on_input_grid = self.transforms.inverse(probabilities)
        labels = on_input_grid.argmax(dim=0, keepdim=True).to(dtype=on_input_grid.dtype)
        op_output.emit((labels[0].numpy().astype(np.uint8), on_input_grid.affine.numpy()), "labels")


class NiftiWriterOperator(Operator):
    """Writes the labelmap as ``<input name>_seg.nii.gz`` into the output folder."""

    def __init__(self, fragment: Fragment, *args, output_folder: Path, **kwargs):
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("labels")

    def compute(self, op_input, op_output, context):
        import nibabel

        labels, affine = op_input.receive("labels")
        self.output_folder.mkdir(parents=True, exist_ok=True)
        image = nibabel.Nifti1Image(labels, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        nibabel.save(image, str(self.output_folder / "phantom_seg.nii.gz"))


def preprocessing():
    from monai.transforms import Compose, Orientation, ScaleIntensityRange, Spacing

    return Compose([Orientation(axcodes="RAS"), Spacing(pixdim=SPACING_MM, mode="bilinear"),
                    ScaleIntensityRange(**INTENSITY)])


class PhantomSegmentationApp(Application):
    """Loader -> pre-processing -> inference -> post-processing -> writer."""

    def compose(self):
        app_context = Application.init_app_context(self.argv)
        logging.info(f"phantom app: {app_context}")
        loader = NiftiLoaderOperator(self, CountCondition(self, 1), input_folder=app_context.input_path,
                                     name="loader")
        transforms = preprocessing()  # one instance: post-processing inverts what it did
        preprocess = PreprocessOperator(self, transforms=transforms, name="preprocess")
        inference = InferenceOperator(self, app_context=app_context, name="inference")
        postprocess = PostprocessOperator(self, transforms=transforms, name="postprocess")
        writer = NiftiWriterOperator(self, output_folder=app_context.output_path, name="writer")
        self.add_flow(loader, preprocess, {("image", "image")})
        self.add_flow(preprocess, inference, {("image", "image")})
        self.add_flow(inference, postprocess, {("probabilities", "probabilities")})
        self.add_flow(postprocess, writer, {("labels", "labels")})


if __name__ == "__main__":
    PhantomSegmentationApp().run()
