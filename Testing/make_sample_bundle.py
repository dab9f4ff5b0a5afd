"""Regenerate the sample MONAI Bundle around the phantom UNet, and export it in the other two forms.

    python Testing/make_sample_bundle.py

writes MonaiDeployer/Resources/SampleModels/PhantomBundle/ (configs/metadata.json,
configs/inference.json, models/model.pt) from PhantomUNet.ts and its sidecar: the same network,
weights and pre/post-processing, written the way Model Zoo bundles are, so that MONAI's own
``python -m monai.bundle run --config_file configs/inference.json`` runs it on a folder of NIfTI files.
Tests call ``export_zip`` and ``export_torchscript`` to make the ``.zip`` and ``ckpt_export`` forms.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MODELS = REPO_ROOT / "MonaiDeployer" / "Resources" / "SampleModels"
BUNDLE_FOLDER = SAMPLE_MODELS / "PhantomBundle"
CONFIG_FILES = ("metadata.json", "inference.json")


def metadata(sidecar: dict) -> dict:
    labels = {str(value): entry["name"] for value, entry in sidecar["labels"].items()}
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                  "meta_schema_20220324.json",
        "version": sidecar["version"],
        "changelog": {sidecar["version"]: "made by Testing/make_sample_bundle.py from PhantomUNet.ts"},
        "monai_version": "1.3.0",
        "pytorch_version": "2.0.0",
        "numpy_version": "1.24.0",
        "required_packages_version": {"nibabel": "5.0.0"},
        "name": "Phantom organ and lesion bundle",
        "task": "Segmentation of a synthetic organ and lesion in CT-like phantoms",
        "description": "The phantom UNet of PhantomUNet.ts as a MONAI Bundle. For testing and demonstration only.",
        "authors": "MonaiDeployer",
        "copyright": "Apache-2.0",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                                 "spatial_shape": [64, 64, 64], "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True, "channel_def": {"0": "image"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(labels) + 1,
                                 "spatial_shape": [64, 64, 64], "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True, "channel_def": {"0": "background", **labels}}},
        },
    }


def inference_config(sidecar: dict) -> dict:
    """The sidecar's pipeline as a Model Zoo style inference config (evaluator included, for monai.bundle run)."""
    network = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": len(sidecar["labels"]) + 1,
               "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1, "norm": "batch"}
    window = sidecar["inference"]
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "image_key": "image",
        "dataset_dir": "$@bundle_root + '/test_data'",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "@image_key"},
            {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
            {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "@image_key", "pixdim": sidecar["input"]["spacing"], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "@image_key", **sidecar["input"]["intensity"]},
            {"_target_": "EnsureTyped", "keys": "@image_key"},
        ]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": window["roi_size"],
                    "sw_batch_size": window["sw_batch_size"], "overlap": window["overlap"], "mode": window["mode"]},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "@image_key",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_dtype": "$numpy.uint8", "separate_folder": False, "resample": False},
        ]},
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing"},
        "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                             "load_dict": {"model": "@network"}, "map_location": "@device"},
        "initialize": ["$@checkpointloader(@evaluator)"],
        "run": ["$@evaluator.run()"],
    }


def write_bundle(folder: Path = BUNDLE_FOLDER) -> Path:
    """The bundle folder, weights taken from the TorchScript sample (same network, same parameter names)."""
    import torch

    sidecar = json.loads((SAMPLE_MODELS / "PhantomUNet.json").read_text())
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata(sidecar), indent=2) + "\n")
    (folder / "configs" / "inference.json").write_text(json.dumps(inference_config(sidecar), indent=2) + "\n")
    scripted = torch.jit.load(str(SAMPLE_MODELS / "PhantomUNet.ts"), map_location="cpu")
    torch.save(dict(scripted.state_dict()), folder / "models" / "model.pt")
    return folder


def export_zip(folder: Path, target: Path) -> Path:
    """``Name/configs/...``, as bundles are shared."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return target


def export_torchscript(folder: Path, target: Path) -> Path:
    """What ``monai.bundle ckpt_export`` makes: the scripted network with the configs as extra files."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    parser["device"] = "cpu"
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(folder / "models" / "model.pt", weights_only=True))
    extra = {name: (folder / "configs" / name).read_text() for name in CONFIG_FILES}
    torch.jit.save(torch.jit.script(network.eval()), str(target), _extra_files=extra)
    return target


if __name__ == "__main__":
    print(f"wrote {write_bundle()}")
    sys.exit(0)
