"""Phantom organ and lesion segmentation as a MONAI Deploy app on DICOM: series in, DICOM SEG out.

Built from the SDK's own operators, as its example apps are: DICOM loader, series selector,
series to volume, a segmentation operator that runs ``MonaiSegInferenceOperator`` with the
phantom UNet's transforms, and the DICOM segmentation writer. Run as

    python app.py -i DICOM_FOLDER -o OUTPUT_FOLDER -m PhantomUNet.ts
"""

from __future__ import annotations

from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Fragment, Operator, OperatorSpec
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator, SegmentDescription
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from monai.deploy.operators.monai_seg_inference_operator import (
    InfererType,
    InMemImageReader,
    MonaiSegInferenceOperator,
)

CT_SERIES_RULES = '{"selections": [{"name": "CT series", "conditions": {"Modality": "(?i)CT"}}]}'


class PhantomSegOperator(Operator):
    """The phantom UNet's pre-processing, sliding window and post-processing around the SDK's inference operator."""

    def __init__(self, fragment: Fragment, *args, app_context: AppContext, model_path: Path, **kwargs):
        self.app_context = app_context
        self.model_path = model_path
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("image")
        spec.output("seg_image")

    def compute(self, op_input, op_output, context):
        input_image = op_input.receive("image")
        reader = InMemImageReader(input_image)
        pre_transforms = self.pre_process(reader)
        inference = MonaiSegInferenceOperator(
            self.fragment, roi_size=(64, 64, 64), pre_transforms=pre_transforms,
            post_transforms=self.post_process(pre_transforms), overlap=0.25, sw_batch_size=1,
            inferer=InfererType.SLIDING_WINDOW, app_context=self.app_context, model_path=self.model_path,
            name="monai_seg_inference_op", mode="gaussian",
        )
        op_output.emit(inference.compute_impl(input_image, context), "seg_image")

    def pre_process(self, reader):
        from monai.transforms import (
            Compose,
            EnsureChannelFirstd,
            EnsureTyped,
            LoadImaged,
            Orientationd,
            ScaleIntensityRanged,
            Spacingd,
        )

        return Compose([
            LoadImaged(keys="image", reader=reader),
            EnsureChannelFirstd(keys="image"),
            Orientationd(keys="image", axcodes="RAS"),
            Spacingd(keys="image", pixdim=(1.5, 1.5, 1.5), mode="bilinear"),
            ScaleIntensityRanged(keys="image", a_min=-200.0, a_max=300.0, b_min=0.0, b_max=1.0, clip=True),
            EnsureTyped(keys="image"),
        ])

    def post_process(self, pre_transforms):
        from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd

        return Compose([
            Activationsd(keys="pred", softmax=True),
            Invertd(keys="pred", transform=pre_transforms, orig_keys="image", nearest_interp=False, to_tensor=True),
            AsDiscreted(keys="pred", argmax=True),
        ])


class PhantomDicomSegApp(Application):
    """DICOM loader -> series selector -> series to volume -> segmentation -> DICOM SEG writer."""

    def compose(self):
        from pydicom.sr.codedict import codes

        app_context = Application.init_app_context(self.argv)
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=Path(app_context.input_path),
                                         name="dicom_loader")
        selector = DICOMSeriesSelectorOperator(self, rules=CT_SERIES_RULES, name="series_selector")
        to_volume = DICOMSeriesToVolumeOperator(self, name="series_to_volume")
        segment = PhantomSegOperator(self, app_context=app_context, model_path=Path(app_context.model_path),
                                     name="segmentation")
        segments = [
            SegmentDescription(segment_label=name, segmented_property_category=codes.SCT.Tissue,
                               segmented_property_type=codes.SCT.Tissue, algorithm_name="phantom-unet",
                               algorithm_family=codes.DCM.ArtificialIntelligence, algorithm_version="1.0.0")
            for name in ("organ", "lesion")
        ]
        writer = DICOMSegmentationWriterOperator(self, segment_descriptions=segments,
                                                 output_folder=Path(app_context.output_path), name="seg_writer")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, segment, {("image", "image")})
        self.add_flow(selector, writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(segment, writer, {("seg_image", "seg_image")})


if __name__ == "__main__":
    PhantomDicomSegApp().run()
