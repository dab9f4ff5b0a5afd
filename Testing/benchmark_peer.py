"""The benchmark's peer rows: SlicerMONAIAuto3DSeg's own inference script against our warm bundle run, with the
same network, weights and transforms, on the real-size volume.

SlicerMONAIAuto3DSeg (lassoan/SlicerMONAIAuto3DSeg) runs ``MONAIAuto3DSeg/Scripts/auto3dseg_segresnet_inference.py``
in a new process for every segmentation, on an Auto3DSeg SegResNetDS checkpoint (``{"config", "state_dict"}``).
Its code is not ours to ship, so ``benchmark.py --peer-script PATH`` takes a copy the user fetched.

Made here: a SegResNetDS checkpoint in that format (trained briefly: time and agreement are measured, not Dice),
a MONAI Bundle of the same network and weights with the script's own transforms (the intensity range then a
sigmoid, RAS, the crop to voxels above 0 with a 10-voxel margin, 1.5 mm; its sliding window; argmax, then the
transforms inverted with nearest labels), and the volume as the NRRD file the script reads. The script's time is
a whole run as the peer makes it (a new Python process); ours is a warm run of the same volume in memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from MonaiDeployerLib import Runner, Volume, open_package

ROI_SIZE = [96, 96, 96]
INTENSITY_BOUNDS = [-200.0, 300.0]
RESOLUTION = [1.5, 1.5, 1.5]
OVERLAP = 0.625  # the script's own sliding window: overlap, one window at a time, gaussian
NETWORK = {"_target_": "SegResNetDS", "init_filters": 16, "blocks_down": [1, 2, 2, 4], "in_channels": 1,
           "out_channels": 3, "dsdepth": 1}
PEER_RUNS = 2
TRAINING_STEPS = 100
TRAINING_CROP = 32


def auto3dseg_checkpoint(path: Path, network: dict = NETWORK, roi_size: list = ROI_SIZE) -> Path:
    """A SegResNetDS checkpoint as Auto3DSeg's segresnet saves it: the config the script reads and the weights."""
    import torch

    config = {"network": network, "roi_size": roi_size, "normalize_mode": "range",
              "intensity_bounds": INTENSITY_BOUNDS, "resample_resolution": RESOLUTION, "orientation_ras": True,
              "crop_foreground": True, "sigmoid": False}
    weights = briefly_trained(network).state_dict()
    torch.save({"config": config, "state_dict": weights, "epoch": 0, "best_metric": 0}, path)
    return path


def briefly_trained(network: dict):
    """The network trained for ``TRAINING_STEPS`` on phantoms under the script's scaling (half a minute): not a good
    model, but its labels follow the phantom, with boundaries where a trained model's are."""
    import torch
    from monai.bundle import ConfigParser
    from monai.losses import DiceCELoss

    from MonaiDeployerLib.testing import sampledata

    torch.manual_seed(7)
    model = ConfigParser(dict(network)).get_parsed_content()
    shape, ijk_to_ras = sampledata.training_grid()
    phantoms = [sampledata.render_phantom(shape, ijk_to_ras, seed) for seed in range(8)]
    low, high = INTENSITY_BOUNDS
    images = torch.stack([torch.sigmoid(torch.from_numpy((image - low) / (high - low) * 2 - 1))
                          for image, _truth in phantoms])[:, None]
    labels = torch.stack([torch.from_numpy(truth.astype(np.int64)) for _image, truth in phantoms])[:, None]
    generator = torch.Generator().manual_seed(1)
    loss_function, optimiser = DiceCELoss(to_onehot_y=True, softmax=True), torch.optim.Adam(model.parameters(), 2e-3)
    model.train()
    for _step in range(TRAINING_STEPS):
        picks = torch.randint(len(images), (2,), generator=generator)
        corner = torch.randint(min(shape) - TRAINING_CROP + 1, (3,), generator=generator).tolist()
        crop = (picks, slice(None), *(slice(start, start + TRAINING_CROP) for start in corner))
        optimiser.zero_grad()
        loss_function(model(images[crop]), labels[crop]).backward()
        optimiser.step()
    return model.eval()


def matching_bundle(checkpoint: Path, folder: Path) -> Path:
    """A MONAI Bundle of the checkpoint's network and weights with the script's transforms, written as configs."""
    import torch
    from make_sample_bundle import SAMPLE_MODELS, metadata

    checkpoint = torch.load(checkpoint, weights_only=False)
    low, high = checkpoint["config"]["intensity_bounds"]
    resolution = checkpoint["config"]["resample_resolution"]
    config = {
        "image_key": "image",
        "device": "$torch.device('cpu')",
        "network_def": checkpoint["config"]["network"],
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "@image_key"},
            {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
            {"_target_": "EnsureTyped", "keys": "@image_key", "dtype": "$torch.float"},
            # the script crops by the loaded image (voxels above 0) after its pointwise scaling: the same box
            {"_target_": "CropForegroundd", "keys": "@image_key", "source_key": "@image_key", "margin": 10,
             "allow_smaller": True},
            {"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": low, "a_max": high, "b_min": -1.0,
             "b_max": 1.0, "clip": False},
            {"_target_": "Lambdad", "keys": "@image_key", "func": "$lambda x: torch.sigmoid(x)"},
            {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "@image_key", "pixdim": resolution, "mode": "bilinear",
             "dtype": "$torch.float", "min_pixdim": [0.75 * size for size in resolution],
             "max_pixdim": [1.25 * size for size in resolution]},
        ]},
        "inferer": {"_target_": "SlidingWindowInfererAdapt", "roi_size": checkpoint["config"]["roi_size"],
                    "sw_batch_size": 1,
                    "overlap": OVERLAP, "mode": "gaussian", "cache_roi_weight_map": False},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True, "dtype": "$torch.uint8"},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "@image_key",
             "nearest_interp": True, "to_tensor": True},
        ]},
    }
    sidecar = json.loads((SAMPLE_MODELS / "PhantomUNet.json").read_text())  # its labels: organ, lesion
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata(sidecar), indent=2))
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    torch.save(checkpoint["state_dict"], folder / "models" / "model.pt")
    return folder


def write_nrrd(volume: Volume, path: Path) -> Path:
    """The volume as Slicer writes a scalar volume for the script: raw NRRD in LPS."""
    import nrrd

    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    directions = ras_to_lps @ volume.ijk_to_ras[:3, :3]
    header = {"space": "left-posterior-superior", "space directions": directions.T,
              "space origin": ras_to_lps @ volume.ijk_to_ras[:3, 3], "kinds": ["domain"] * 3, "encoding": "raw"}
    nrrd.write(str(path), volume.array, header)
    return path


def measure(peer_script: str, volume: Volume, folder: Path) -> dict:
    """The peer's per-run seconds (fastest of ``PEER_RUNS`` new processes), ours warm, and the labels' agreement."""
    import nrrd
    from benchmark_real_size import best_of, peak_run

    checkpoint = auto3dseg_checkpoint(folder / "model.pt")
    bundle = open_package(str(matching_bundle(checkpoint, folder / "Auto3DSegStyleBundle")))
    image, result = write_nrrd(volume, folder / "image.nrrd"), folder / "result.nrrd"
    command = [sys.executable, peer_script, str(checkpoint), str(image), str(result)]

    def peer_run():
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"the peer's script failed: {completed.stderr.strip().splitlines()[-1:]}")
        return completed.stdout

    peer_seconds, peer_log = best_of(PEER_RUNS, peer_run)
    peer_labels, _header = nrrd.read(str(result))
    with Runner(device="cpu") as runner:
        ours = peak_run(runner, bundle, volume)
    return {"peer": peer_seconds, "peer_log": peer_log, "ours": ours,
            "agreement": float(np.mean(peer_labels == ours[3]))}


def report(figures: dict, stages) -> None:
    peer, ours = figures["peer"], figures["ours"][0]
    print(f"peer comparison (SegResNetDS {NETWORK['init_filters']} filters, window {ROI_SIZE}, overlap {OVERLAP}, "
          f"the script's transforms; real-size volume):")
    print(f"{'SlicerMONAIAuto3DSeg script, per run':38s} {peer:9.3f} {1.0:8.2f}")
    print(f"{'warm runner, the same as a bundle':38s} {ours:9.3f} {ours / peer:8.2f}")
    timing_lines = [line.strip() for line in figures["peer_log"].splitlines() if line.startswith("  ")]
    print("peer's own timing log: " + "; ".join(timing_lines))
    print("our run: " + stages(figures["ours"][2]))
    print(f"labels equal to the peer's: {100 * figures['agreement']:.4f} % of voxels")
    met = ours <= 0.6 * peer
    print(f"target (peer): ours <= 0.6 x the peer's per-run time = {0.6 * peer:.1f} s; measured {ours:.1f} s: "
          f"{'meets the target' if met else 'MISSES the target'}")
