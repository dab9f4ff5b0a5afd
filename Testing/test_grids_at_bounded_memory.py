"""The TorchScript mode's grids at bounded memory: labels back onto the input's grid without full-size class
scores (the same labels as MONAI's linear resampling of the scores then argmax, run here at full size as the
reference), the working grid made a slab at a time (MONAI's Orientation and Spacing as the reference), the
held-out phantoms end to end against the mode as it was, and the sidecar's "nearest" choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from todays_pipeline import full_size_reference, todays_labels

from MonaiDeployerLib import PackageError, Runner, Volume, open_package
from MonaiDeployerLib.inference.backends import (
    argmax_over_channels,
    foreground,
    labels_on_grid,
    onto_working_grid,
    torchscript,
)
from MonaiDeployerLib.inference.backends import onto_input_grid as onto
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label

AGREEMENT = 0.9999  # voxels whose label may differ: ties between classes broken by float rounding either way
NEAREST_MINIMUM_DICE = 0.9  # nearest labels are blockier: the small lesion on the 3 mm case loses most


def smooth_scores(classes: int, shape: tuple, seed: int):
    """Softmax scores with blobs a few voxels wide, so that boundaries run through the volume."""
    import torch

    coarse = torch.rand((1, classes, *(size // 4 + 2 for size in shape)), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear")[0].softmax(0)


def geometry(name: str) -> tuple[np.ndarray, tuple, np.ndarray]:
    """(working grid's affine, input shape, input affine) for an input at 0.7 x 0.7 x 1.0 mm."""
    ijk_to_ras = np.diag([0.7, 0.7, 1.0, 1.0])
    ijk_to_ras[:3, 3] = [-50.0, -40.0, -30.0]
    working = np.eye(4)
    if name == "flipped and respaced":
        working[:3, :3] = np.diag([-1.5, 1.5, 1.5])
        working[:3, 3] = [19.3, -40.0, -30.0]
    elif name == "axes swapped":
        working[:3, :3] = [[0, 1.5, 0], [1.5, 0, 0], [0, 0, -1.5]]
        working[:3, 3] = [-50.0, -40.0, 50.0]
    elif name == "oblique":
        angle = 0.3
        working[:3, :3] = 1.3 * np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                                          [0, 0, 1]])
        working[:3, 3] = [-60.0, -50.0, -30.0]
    return working, (90, 100, 70), ijk_to_ras


@pytest.mark.parametrize("name", ["flipped and respaced", "axes swapped", "oblique"])
@pytest.mark.parametrize("classes", [3, 16])
def test_labels_match_full_size_linear_resampling_then_argmax(name, classes):
    working, shape, ijk_to_ras = geometry(name)
    scores = smooth_scores(classes, (52, 50, 48), seed=classes)
    labels = onto.labels_on_input_grid(scores, working, shape, ijk_to_ras)
    reference = full_size_reference(scores, working, shape, ijk_to_ras)
    assert labels.shape == shape and labels.dtype == np.uint8
    assert len(np.unique(reference)) == classes  # every class reaches the input grid: the test sees boundaries
    assert np.mean(labels == reference) >= AGREEMENT, np.count_nonzero(labels != reference)


def test_one_channel_is_thresholded_after_linear_resampling():
    working, shape, ijk_to_ras = geometry("flipped and respaced")
    scores = smooth_scores(2, (52, 50, 48), seed=5)[1:]
    labels = onto.labels_on_input_grid(scores, working, shape, ijk_to_ras, threshold=0.5)
    reference = full_size_reference(scores, working, shape, ijk_to_ras, threshold=0.5)
    assert 0 < reference.mean() < 1
    assert np.mean(labels == reference) >= AGREEMENT


@pytest.mark.parametrize("name", ["axes swapped", "oblique"])
def test_the_labels_do_not_depend_on_the_slab_size(monkeypatch, name):
    working, shape, ijk_to_ras = geometry(name)
    scores = smooth_scores(4, (52, 50, 48), seed=9)
    whole = onto.labels_on_input_grid(scores, working, shape, ijk_to_ras)
    monkeypatch.setattr(onto, "SLAB_VOXELS", 1)  # one plane of the input at a time
    assert np.array_equal(onto.labels_on_input_grid(scores, working, shape, ijk_to_ras), whole)


def test_nearest_takes_each_voxels_nearest_working_grid_label():
    working, shape, ijk_to_ras = geometry("oblique")
    scores = smooth_scores(3, (60, 60, 40), seed=3)
    nearest = onto.labels_on_input_grid(scores, working, shape, ijk_to_ras, interpolation="nearest")
    working_labels = Volume(argmax_over_channels(scores).numpy(), working)
    expected = labels_on_grid(working_labels, shape, ijk_to_ras)  # nearest, 0 outside the working grid
    to_working = np.linalg.inv(working) @ ijk_to_ras
    index = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1).reshape(-1, 3)
    points = index @ to_working[:3, :3].T + to_working[:3, 3]
    inside = np.all((points > 0) & (points < np.asarray(scores.shape[1:]) - 1), axis=1).reshape(shape)
    assert inside.mean() > 0.5
    assert np.mean(nearest[inside] == expected[inside]) >= AGREEMENT
    linear = onto.labels_on_input_grid(scores, working, shape, ijk_to_ras)
    assert not np.array_equal(nearest, linear)  # the two choices differ at boundaries


def test_held_out_phantoms_get_todays_labels_through_the_sample_model(runner, sample_model, held_out):
    import torch

    package = open_package(sample_model)
    model = torch.jit.load(sample_model).eval()
    for case, volume, _truth in held_out:
        labels = runner.run(package, volume).labelmap.array
        reference = todays_labels(model, package, volume)
        assert np.mean(labels == reference) >= AGREEMENT, (case["name"], np.count_nonzero(labels != reference))


@pytest.mark.parametrize(("orientation", "spacing"), [("RAS", [1.5, 1.5, 1.5]), (None, [1.2, 1.7, 2.0]),
                                                      ("LPI", None)])
def test_the_working_grid_is_monais_orientation_then_spacing_made_a_slab_at_a_time(held_out, monkeypatch,
                                                                                  orientation, spacing):
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    monkeypatch.setattr(onto_working_grid, "SLAB_VOXELS", 1 << 12)  # many slabs even on these small volumes
    for case, volume, _truth in held_out:
        int16 = Volume(np.asfortranarray(np.round(volume.array).astype(np.int16)), volume.ijk_to_ras)
        ours = onto_working_grid.working_grid_image(int16, orientation, spacing, torchscript.RAS_AXIS_LABELS)
        reference = MetaTensor(torch.from_numpy(int16.array.astype(np.float32))[None],
                               affine=torch.as_tensor(int16.ijk_to_ras))
        if orientation:
            reference = Orientation(axcodes=orientation, labels=torchscript.RAS_AXIS_LABELS)(reference)
        if spacing:
            reference = Spacing(pixdim=spacing, mode="bilinear", padding_mode="border")(reference)
        assert ours.shape == reference.shape and ours.dtype == torch.float32, case["name"]
        assert torch.allclose(ours.affine, reference.affine.double(), atol=1e-9), case["name"]
        assert torch.allclose(ours.as_tensor(), reference.as_tensor().float(), atol=0.05), case["name"]  # HU


def test_a_sidecar_asking_for_nearest_labels_still_segments_the_held_out_phantoms(tmp_path, sample_model, held_out):
    model = tmp_path / "nearest.ts"
    shutil.copy(sample_model, model)
    sidecar = json.loads(Path(sample_model).with_suffix(".json").read_text())
    sidecar["output"]["interpolation"] = "nearest"
    (tmp_path / "nearest.json").write_text(json.dumps(sidecar))
    package = open_package(str(model))
    assert package.settings.output.interpolation == "nearest"
    with Runner(device="cpu") as runner:
        for case, volume, truth in held_out:
            result = runner.run(package, volume)
            assert result.labelmap.same_grid(volume, tolerance=1e-12)
            scores = dice_per_label(result.labelmap.array, truth, result.labels)
            assert min(scores.values()) >= NEAREST_MINIMUM_DICE, (case["name"], scores)


def test_an_unknown_interpolation_is_refused_with_the_choices(tmp_path, sample_model):
    model = tmp_path / "typo.ts"
    shutil.copy(sample_model, model)
    (tmp_path / "typo.json").write_text(json.dumps({"output": {"interpolation": "cubic"}}))
    with pytest.raises(PackageError, match=r"output\.interpolation must be one of linear, nearest"):
        open_package(str(model))


def test_the_foreground_box_holds_every_voxel_above_the_threshold_with_its_margin(monkeypatch):
    monkeypatch.setattr(foreground, "SLAB_PLANES", 3)  # the box spans several slabs
    array = np.full((20, 30, 25), -1000, dtype=np.int16)
    array[4:9, 10:12, 7:20] = 50
    array[0, 29, 24] = 1  # one voxel in a far corner: the margin stops at the edges
    assert foreground.foreground_box(array, 0, 2) == (slice(0, 11), slice(8, 30), slice(5, 25))
    array[0, 29, 24] = -1
    assert foreground.foreground_box(array, 0, 2) == (slice(2, 11), slice(8, 14), slice(5, 22))
    assert foreground.foreground_box(array, 100, 2) is None
    channels = np.stack([np.full_like(array, -1000), array], axis=-1)  # the second channel decides
    assert foreground.foreground_box(channels, 0, 0) == (slice(4, 9), slice(10, 12), slice(7, 20))


def test_a_sidecar_asking_for_a_foreground_crop_gives_the_uncropped_labels(tmp_path, runner, sample_model, held_out):
    model = tmp_path / "cropped.ts"
    shutil.copy(sample_model, model)
    sidecar = json.loads(Path(sample_model).with_suffix(".json").read_text())
    sidecar["input"]["crop_foreground"] = {"threshold": -500}  # the body, without the air around it
    (tmp_path / "cropped.json").write_text(json.dumps(sidecar))
    package = open_package(str(model))
    assert package.settings.input.crop_foreground == {"threshold": -500, "margin": 10}
    whole = open_package(sample_model)
    labels_of_package = package.labels
    for case, volume, truth in held_out:
        box = foreground.foreground_box(volume.array, -500, 10)
        assert np.prod([part.stop - part.start for part in box]) < np.prod(volume.shape)  # it crops
        labels = runner.run(package, volume).labelmap
        assert labels.same_grid(volume, tolerance=1e-12)
        outside = np.ones(volume.shape, dtype=bool)
        outside[box] = False
        assert not labels.array[outside].any()
        scores = dice_per_label(labels.array, truth, labels_of_package)
        assert min(scores.values()) >= MINIMUM_DICE, (case["name"], scores)
        reference = runner.run(whole, volume).labelmap.array
        assert np.mean(labels.array == reference) >= 0.995, case["name"]  # the crop moves the working grid a little


def test_a_volume_without_foreground_is_segmented_whole(tmp_path, runner, sample_model, held_out):
    model = tmp_path / "cropped.ts"
    shutil.copy(sample_model, model)
    sidecar = json.loads(Path(sample_model).with_suffix(".json").read_text())
    sidecar["input"]["crop_foreground"] = {"threshold": 5000, "margin": 0}  # above every voxel
    (tmp_path / "cropped.json").write_text(json.dumps(sidecar))
    _, volume, _ = held_out[0]
    result = runner.run(open_package(str(model)), volume)
    assert np.array_equal(result.labelmap.array, runner.run(open_package(sample_model), volume).labelmap.array)


@pytest.mark.parametrize(("crop", "message"), [({"margins": 3}, "takes threshold and margin"),
                                               ({"margin": -1}, "a margin of 0 or more voxels")])
def test_a_bad_foreground_crop_is_refused_with_its_key(tmp_path, sample_model, crop, message):
    model = tmp_path / "typo.ts"
    shutil.copy(sample_model, model)
    (tmp_path / "typo.json").write_text(json.dumps({"input": {"crop_foreground": crop}}))
    with pytest.raises(PackageError, match=message):
        open_package(str(model))


WORKER_FIRST_RUN = """
import gc, io, sys, types
import numpy as np
from MonaiDeployerLib import Volume, open_package
from MonaiDeployerLib.inference.backends import Segmented
from MonaiDeployerLib.inference.worker import Worker
from MonaiDeployerLib.testing import sampledata

shape, ijk_to_ras = sampledata.training_grid()
image, _ = sampledata.render_phantom(shape, ijk_to_ras, seed=1001)
folder = sys.argv[2]
np.save(folder + "/input.npy", image.astype(np.float32) + 0.5)  # no other array in this process has this content
package = open_package(sys.argv[1])
worker = Worker(io.StringIO())
answer = worker.run({"id": 1, "package": package.to_dict(), "input": folder + "/input.npy",
                     "output": folder + "/output.npy", "ijk_to_ras": ijk_to_ras.tolist(), "device": "cpu"})
assert "import" in answer["timings"]  # torch and MONAI were first imported by this run
gc.collect()
# numpy arrays are not tracked by the garbage collector, frames are: what a kept frame holds is in its locals
kept = [name for item in gc.get_objects() if isinstance(item, types.FrameType)
        for name, value in item.f_locals.items() if isinstance(value, (np.ndarray, Volume, Segmented))]
print(kept)
"""


def test_a_workers_first_run_keeps_nothing_of_its_volume_alive(tmp_path, sample_model):
    """The run that first imports MONAI must not leave its input or labels behind in the warm worker."""
    import subprocess
    import sys

    answer = subprocess.run([sys.executable, "-c", WORKER_FIRST_RUN, sample_model, str(tmp_path)], check=True,
                            capture_output=True, text=True)
    assert answer.stdout.strip().splitlines()[-1] == "[]", answer.stdout
