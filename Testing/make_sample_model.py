"""Regenerate the sample model: a tiny MONAI UNet trained on synthetic CT-like phantoms.

Run from anywhere:  .venv/bin/python Testing/make_sample_model.py
It trains on the CPU in about a minute, prints per-label Dice on held-out phantoms, and writes
MonaiDeployer/Resources/SampleModels/PhantomUNet.ts (TorchScript) and PhantomUNet.json (its
sidecar). Nothing is written unless every label reaches DICE_TARGET.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "MonaiDeployer"))
from MonaiDeployerLib.testing import sampledata  # noqa: E402  (needs the sys.path entry above)

OUTPUT_DIR = REPO_ROOT / "MonaiDeployer" / "Resources" / "SampleModels"
MODEL_PATH = OUTPUT_DIR / "PhantomUNet.ts"
SIDECAR_PATH = OUTPUT_DIR / "PhantomUNet.json"

INTENSITY = {"a_min": -200.0, "a_max": 300.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
ROI_SIZE = 64
CROP_SIZE = 48
AIR_MARGIN = 12
"""Crops may reach this far outside the training grid, so that the model also learns phantoms cut
by a window's edge, as sliding-window inference shows them. Scaled intensity clips air to 0, so
zero padding is exactly what a larger grid would hold."""
SOURCE_SPACING_RANGE_MM = (0.75, 3.0)
SHARE_AT_TRAINING_SPACING = 0.5
TRAINING_SEEDS = range(48)
VALIDATION_SEEDS = range(900, 908)
ITERATIONS = 900
BATCH_SIZE = 2
LEARNING_RATE = 1e-2
DICE_TARGET = 0.97
RANDOM_SEED = 1


def scale_intensity(image_hu: np.ndarray) -> np.ndarray:
    """What the sidecar's "intensity" block asks the deployer to do (MONAI ScaleIntensityRange)."""
    a_min, a_max, b_min, b_max = (INTENSITY[key] for key in ("a_min", "a_max", "b_min", "b_max"))
    scaled = (image_hu - a_min) / (a_max - a_min) * (b_max - b_min) + b_min
    return np.clip(scaled, b_min, b_max).astype(np.float32)


def to_tensors(rendered: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(image in HU, truth) pairs as scaled images and int64 labels, both shaped (N, 1, D, H, W)."""
    images = np.stack([scale_intensity(image) for image, _ in rendered])
    labels = np.stack([truth.astype(np.int64) for _, truth in rendered])
    return torch.from_numpy(images)[:, None], torch.from_numpy(labels)[:, None]


def render_validation_set() -> tuple[torch.Tensor, torch.Tensor]:
    shape, ijk_to_ras = sampledata.training_grid()
    return to_tensors([sampledata.render_phantom(shape, ijk_to_ras, seed) for seed in VALIDATION_SEEDS])


def random_source_spacing(rng: np.random.Generator) -> np.ndarray:
    """Half the phantoms are drawn at the training spacing, half on a random anisotropic grid.

    The deployer resamples every input to the model's spacing, so the model must know both sharp
    edges and the blurred edges and correlated noise that linear resampling leaves.
    """
    if rng.random() < SHARE_AT_TRAINING_SPACING:
        return np.full(3, sampledata.TRAINING_SPACING_MM)
    return rng.uniform(*SOURCE_SPACING_RANGE_MM, size=3)


def render_training_example(seed: int, source_spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Phantom seed drawn at about source_spacing over training_grid()'s extent, resampled linearly onto it."""
    shape, ijk_to_ras = sampledata.training_grid()
    extent_mm = (np.asarray(shape) - 1) * sampledata.TRAINING_SPACING_MM
    source_shape = tuple(int(n) + 1 for n in np.rint(extent_mm / source_spacing))
    source_ijk_to_ras = ijk_to_ras.copy()
    source_ijk_to_ras[:3, :3] = np.diag(extent_mm / (np.asarray(source_shape) - 1))
    source_image, truth = sampledata.render_phantom(source_shape, source_ijk_to_ras, seed)
    if source_shape != shape:
        _, truth = sampledata.render_phantom(shape, ijk_to_ras, seed)
    image = torch.nn.functional.interpolate(
        torch.from_numpy(source_image)[None, None], size=shape, mode="trilinear", align_corners=True
    )[0, 0].numpy()
    return image, truth


def render_training_set() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(RANDOM_SEED)
    return to_tensors([render_training_example(seed, random_source_spacing(rng)) for seed in TRAINING_SEEDS])


def build_model(out_channels: int = len(sampledata.LABELS) + 1) -> UNet:
    """The sample's network; the benchmark also builds it with more output classes."""
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=out_channels,
        channels=(8, 16, 32),
        strides=(2, 2),
        num_res_units=1,
        norm="batch",
    )


def random_batch(
    images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BATCH_SIZE random CROP_SIZE crops of the air-padded volumes, each flipped at random along each axis."""
    picks = torch.randint(len(images), (BATCH_SIZE,), generator=generator)
    padding = (AIR_MARGIN,) * 6
    image_crops, label_crops = [], []
    for pick in picks.tolist():
        image, label = (torch.nn.functional.pad(volume[pick], padding) for volume in (images, labels))
        corner = torch.randint(image.shape[-1] - CROP_SIZE + 1, (3,), generator=generator).tolist()
        window = (slice(None), *(slice(start, start + CROP_SIZE) for start in corner))
        flips = [axis + 1 for axis in range(3) if torch.rand(1, generator=generator).item() < 0.5]
        image_crops.append(image[window].flip(flips))
        label_crops.append(label[window].flip(flips))
    return torch.stack(image_crops), torch.stack(label_crops)


def train(model: UNet, images: torch.Tensor, labels: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=ITERATIONS)
    model.train()
    started = time.perf_counter()
    for iteration in range(1, ITERATIONS + 1):
        image_batch, label_batch = random_batch(images, labels, generator)
        optimizer.zero_grad()
        loss = loss_function(model(image_batch), label_batch)
        loss.backward()
        optimizer.step()
        schedule.step()
        if iteration % 100 == 0:
            print(f"  iteration {iteration:4d}  loss {loss.item():.4f}  {time.perf_counter() - started:.0f} s")


def dice_per_label(model: UNet, images: torch.Tensor, labels: torch.Tensor) -> dict[int, float]:
    """Dice of argmax(softmax) against the truth, pooled over all validation phantoms."""
    model.eval()
    with torch.no_grad():
        predicted = torch.softmax(model(images), dim=1).argmax(dim=1, keepdim=True)
    dice = {}
    for label in sampledata.LABELS:
        overlap = ((predicted == label) & (labels == label)).sum().item()
        total = (predicted == label).sum().item() + (labels == label).sum().item()
        dice[label] = 2.0 * overlap / total
    return dice


def sidecar() -> dict:
    return {
        "name": "Phantom organ and lesion (tiny UNet)",
        "version": "1.0.0",
        "description": (
            "A tiny 3D UNet trained on synthetic CT-like phantoms by Testing/make_sample_model.py. "
            "For testing and demonstration only."
        ),
        "input": {
            "channels": 1,
            "orientation": "RAS",
            "spacing": [sampledata.TRAINING_SPACING_MM] * 3,
            "intensity": INTENSITY,
        },
        "inference": {"roi_size": [ROI_SIZE] * 3, "sw_batch_size": 1, "overlap": 0.25, "mode": "gaussian"},
        "output": {"activation": "softmax"},
        "labels": {
            str(label): {"name": name, "color": list(sampledata.COLORS[label])}
            for label, name in sampledata.LABELS.items()
        },
        "requirements": {"torch": ">=2.0", "monai": ">=1.3"},
    }


def export(model: UNet) -> None:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    torch.jit.script(model.eval()).save(str(MODEL_PATH))
    SIDECAR_PATH.write_text(json.dumps(sidecar(), indent=2) + "\n")


def main() -> int:
    started = time.perf_counter()
    torch.set_num_threads(2)
    torch.manual_seed(RANDOM_SEED)
    seen_in_training = set(TRAINING_SEEDS)
    assert not seen_in_training & set(VALIDATION_SEEDS), "validation phantoms must be unseen"
    assert max(seen_in_training) < sampledata.FIRST_HELD_OUT_SEED, "sampledata.held_out_cases() must be unseen"

    print(f"Rendering {len(TRAINING_SEEDS)} training phantoms...")
    images, labels = render_training_set()
    model = build_model()
    print(f"Training for {ITERATIONS} iterations...")
    train(model, images, labels)

    dice = dice_per_label(model, *render_validation_set())
    for label, name in sampledata.LABELS.items():
        print(f"Dice {name}: {dice[label]:.4f} on {len(VALIDATION_SEEDS)} held-out phantoms")
    if min(dice.values()) < DICE_TARGET:
        print(f"Below the Dice target {DICE_TARGET}: nothing written.")
        return 1

    export(model)
    for path in (MODEL_PATH, SIDECAR_PATH):
        print(f"Wrote {path.relative_to(REPO_ROOT)} ({path.stat().st_size / 1024:.0f} KiB)")
    print(f"Done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
