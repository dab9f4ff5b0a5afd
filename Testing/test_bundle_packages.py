"""MONAI Bundles described from their files (no config evaluated): the Model Zoo's real metadata, three forms."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from MonaiDeployerLib import PackageError, open_package
from MonaiDeployerLib.packages.bundle import BundleSettings

MODEL_ZOO = REPO_ROOT.parent / "shared" / "model-zoo"
needs_model_zoo = pytest.mark.skipif(not MODEL_ZOO.is_dir(), reason="../shared/model-zoo is not beside the repository")


def bundle_folder(tmp_path: Path, name: str) -> Path:
    """A bundle folder made of a Model Zoo bundle's real configs (weights are never needed to describe it)."""
    folder = tmp_path / name
    shutil.copytree(MODEL_ZOO / name / "configs", folder / "configs")
    return folder


def zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, f"{folder.name}/{path.relative_to(folder)}")
    return target


@needs_model_zoo
@pytest.mark.parametrize(("name", "labels", "config", "inputs"), [
    ("spleen_ct_segmentation", {1: "spleen"}, "inference.json", ["image"]),
    ("swin_unetr_btcv_segmentation", {1: "spleen", 6: "Liver", 13: "Left adrenal gland"}, "inference.json",
     ["image"]),
    ("brats_mri_segmentation", {1: "Tumor core", 2: "Whole tumor", 3: "Enhancing tumor"}, "inference.json",
     ["T1c", "T1", "T2", "FLAIR"]),
    ("pancreas_ct_dints_segmentation", {1: "pancreas", 2: "pancreatic tumor"}, "inference.yaml", ["image"]),
    ("ventricular_short_axis_3label", {1: "lv_pool", 2: "myocardium", 3: "rv_pool"}, "inference.json", ["image"]),
    ("segmentation_template", {1: "category 1", 2: "category 2", 3: "category 3"}, "inference.yaml", ["image"]),
])
def test_model_zoo_bundles_are_described_from_their_metadata(tmp_path, name, labels, config, inputs):
    package = open_package(str(bundle_folder(tmp_path, name)))
    metadata = json.loads((MODEL_ZOO / name / "configs" / "metadata.json").read_text())
    assert package.mode == "bundle"
    assert package.name == metadata["name"] and package.version == metadata["version"]
    assert labels.items() <= package.labels.items()
    assert "background" not in [label.lower() for label in package.labels.values()]
    assert package.requirements["monai"] == f">={metadata['monai_version']}"
    assert package.requirements["torch"] == f">={metadata['pytorch_version']}"
    assert "nibabel" in package.requirements and "pytorch-ignite" in package.requirements
    assert package.settings == BundleSettings(
        form="folder", inference_config=config, channels=len(inputs), channel_names=inputs,
        outputs_overlap=name == "brats_mri_segmentation",
        made_with={"monai": metadata["monai_version"], "torch": metadata["pytorch_version"],
                   "numpy": metadata["numpy_version"]},
        licence=metadata.get("license", ""))  # ventricular_short_axis_3label's: "See license.txt"
    assert len(package.content_hash) == 64


@needs_model_zoo
def test_the_three_bundle_forms_describe_the_same_bundle(tmp_path):
    import torch

    folder = bundle_folder(tmp_path, "spleen_ct_segmentation")
    archive = zip_folder(folder, tmp_path / "spleen.zip")
    exported = tmp_path / "renamed_after_export.ts"
    configs = folder / "configs"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(exported), _extra_files={
        "metadata.json": (configs / "metadata.json").read_text(),
        "inference.json": (configs / "inference.json").read_text()})
    described = [open_package(str(path)) for path in (folder, archive, exported)]
    assert [package.settings.form for package in described] == ["folder", "zip", "torchscript"]
    assert {(package.mode, package.name, package.version) for package in described} == {
        ("bundle", "Spleen CT segmentation", described[0].version)}
    assert all(package.labels == {1: "spleen"} for package in described)
    assert all(package.settings.inference_config == "inference.json" for package in described)


@pytest.mark.parametrize(("entries", "cause"), [
    ({"bundle/configs/inference.json": "{}"}, "has no configs/metadata.json"),
    ({"bundle/configs/metadata.json": "{broken"}, "metadata.json is not valid JSON"),
    ({"bundle/configs/metadata.json": "{}", "bundle/../../etc/cron.d/x": "boom"}, "escapes its folder"),
    ({"a/configs/metadata.json": "{}", "b/configs/metadata.json": "{}"}, "expected one configs/ folder"),
])
def test_broken_bundle_zips_are_refused_with_the_cause(tmp_path, entries, cause):
    target = tmp_path / "bundle.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    with pytest.raises(PackageError, match=cause):
        open_package(str(target))


def test_a_bundle_folder_without_metadata_is_refused(tmp_path):
    (tmp_path / "bundle" / "configs").mkdir(parents=True)
    (tmp_path / "bundle" / "configs" / "inference.json").write_text("{}")
    with pytest.raises(PackageError, match=r"has no configs/metadata\.json"):
        open_package(str(tmp_path / "bundle"))
