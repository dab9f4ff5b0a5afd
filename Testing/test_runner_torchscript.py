"""The Python API on TorchScript packages: overlap, exact grids, the documented defaults, warm runs and failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import numpy as np
import psutil
import pytest

from MonaiDeployerLib import Cancelled, InputError, PackageError, Runner, Volume, WorkerError, open_package
from MonaiDeployerLib.testing import sampledata
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label


def test_held_out_phantoms_reach_the_dice_target_on_their_own_grid(runner, sample_model, held_out):
    package = open_package(sample_model)
    for case, volume, truth in held_out:
        result = runner.run(package, volume)
        assert result.labelmap.same_grid(volume, tolerance=1e-12), case["name"]
        assert result.labelmap.array.dtype == np.uint8
        assert result.labels == {1: "organ", 2: "lesion"}
        scores = dice_per_label(result.labelmap.array, truth, result.labels)
        assert min(scores.values()) >= MINIMUM_DICE, (case["name"], scores)


def test_without_sidecar_one_channel_is_thresholded_at_half_in_loader_axis_order(runner, tiny_models):
    array = np.random.default_rng(0).random((5, 6, 7), dtype=np.float32)
    result = runner.run(tiny_models["identity"], Volume(array, np.diag([0.7, -1.1, 3.0, 1.0])))
    assert np.array_equal(result.labelmap.array, (array > 0.5).astype(np.uint8))
    assert result.labels == {1: "label_1"}


def test_without_sidecar_channels_are_reduced_by_argmax(runner, tiny_models):
    array = np.random.default_rng(1).random((8, 5, 6), dtype=np.float32)
    result = runner.run(tiny_models["two_classes"], Volume(array))
    assert np.array_equal(result.labelmap.array, (array > 0.5).astype(np.uint8))


def test_second_run_loads_neither_torch_nor_the_model(sample_model, held_out):
    _, volume, _ = held_out[0]
    with Runner(device="cpu") as fresh:
        first = fresh.run(sample_model, volume)
        second = fresh.run(sample_model, volume)
    assert {"start_worker", "import", "load_model"} <= set(first.timings)
    assert first.warm == {"worker": False, "imports": False, "model": False}
    assert not {"start_worker", "import", "load_model"} & set(second.timings)
    assert second.warm == {"worker": True, "imports": True, "model": True}
    assert np.array_equal(first.labelmap.array, second.labelmap.array)


def test_a_warm_worker_gives_back_the_memory_a_large_run_needed(sample_model):
    """glibc's allocator keeps freed heap pages: untrimmed, this worker held 5 to 15 % more after each later run."""
    def phantom(size: int, seed: int) -> Volume:
        shape, ijk_to_ras = sampledata.benchmark_grid(size)
        return Volume(sampledata.render_phantom(shape, ijk_to_ras, seed)[0], ijk_to_ras)

    small, large = phantom(48, 1), phantom(144, 2)  # 27 times the voxels
    with Runner(device="cpu") as fresh:
        memory = [fresh.run(sample_model, volume).worker_memory for volume in (small, small, large, small)]
    assert max(memory) <= 1.01 * min(memory), [round(value / 2**20) for value in memory]


def test_a_changed_model_file_is_loaded_again(runner, tiny_models, tmp_path):
    model = tmp_path / "model.ts"
    array = np.random.default_rng(2).random((4, 4, 4), dtype=np.float32)
    shutil.copy(tiny_models["identity"], model)
    runner.run(str(model), Volume(array))
    assert runner.run(str(model), Volume(array)).warm["model"]
    shutil.copy(tiny_models["two_classes"], model)
    os.utime(model, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    changed = runner.run(str(model), Volume(array))
    assert not changed.warm["model"]
    assert np.array_equal(changed.labelmap.array, (array > 0.5).astype(np.uint8))


def test_a_multi_channel_input_reaches_the_model_channel_first(runner, tiny_models):
    channels = np.random.default_rng(2).random((5, 6, 7, 2), dtype=np.float32)
    result = runner.run(tiny_models["identity"], Volume(channels))  # identity: two channels in, two scores out
    assert np.array_equal(result.labelmap.array, (channels[..., 1] > channels[..., 0]).astype(np.uint8))


@pytest.mark.parametrize("windowed", [False, True])
@pytest.mark.parametrize(("model", "cause"), [
    ("two_input_channels", "the model takes 2 input channels; the input has 1"),
    ("shrinking", "a segmentation model must keep the shape"),
])
def test_a_model_that_does_not_fit_the_input_is_named(runner, tiny_models, tmp_path, model, cause, windowed):
    path = tiny_models[model]
    if windowed:  # the same model by sliding window: the error comes from its first window
        path = str(shutil.copy(path, tmp_path / "windowed.ts"))
        (tmp_path / "windowed.json").write_text(json.dumps({"inference": {"roi_size": [4, 4, 4],
                                                                          "sw_batch_size": 2}}))
    with pytest.raises(PackageError, match=cause) as raised:
        runner.run(path, Volume(np.zeros((6, 6, 6), np.float32)))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("array", "cause"), [
    (np.zeros((16, 16), np.float32), "the input is 2D"),
    (np.zeros((16, 16, 16, 20), np.float32), "the input has 20 channels"),
    (np.full((16, 16, 16), np.nan, np.float32), "4096 NaN or infinite voxels"),
])
def test_bad_volumes_are_refused_before_the_worker_sees_them(tiny_models, array, cause):
    unstarted = Runner(device="cpu")
    with pytest.raises(InputError, match=cause):
        unstarted.run(tiny_models["identity"], Volume(array))
    assert unstarted.client.pid is None


def test_cuda_without_a_gpu_is_a_clear_error(tiny_models):
    with Runner(device="cuda") as on_gpu, pytest.raises(PackageError, match="sees no usable GPU; choose device cpu"):
        on_gpu.run(tiny_models["identity"], Volume(np.zeros((4, 4, 4), np.float32)))


def test_a_worker_python_without_torch_stops_with_the_pip_line(tiny_models, tmp_path):
    import venv

    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False, system_site_packages=False, symlinks=True)
    site_packages = os.path.dirname(os.path.dirname(np.__file__))
    for folder in ("numpy", "numpy.libs"):  # numpy only: the worker starts, then finds no torch
        shutil.copytree(os.path.join(site_packages, folder),
                        bare / "lib" / f"python{_version()}" / "site-packages" / folder)
    with Runner(python=str(bare / "bin" / "python")) as elsewhere, \
            pytest.raises(PackageError, match=r'cannot run in .*bare/bin/python: torch is not installed '
                                              r'\(pip install "torch>=1.6"\)'):
        elsewhere.run(tiny_models["identity"], Volume(np.zeros((4, 4, 4), np.float32)))


def test_missing_worker_python_is_named(tiny_models):
    with pytest.raises(WorkerError, match="worker Python not found: /nowhere/python"):
        Runner(python="/nowhere/python").run(tiny_models["identity"], Volume(np.zeros((4, 4, 4), np.float32)))


@pytest.fixture(scope="module")
def large_volume() -> Volume:
    """A 128^3 phantom: its sliding-window inference lasts long enough to be interrupted."""
    shape, ijk_to_ras = sampledata.benchmark_grid()
    return Volume(sampledata.render_phantom(shape, ijk_to_ras, seed=7)[0], ijk_to_ras)


def _wait_for_inference(job):
    while not any(event.stage == "inference" for event in job.poll(block_seconds=0.05)):
        assert not job.done, job.error


def test_a_killed_worker_gives_a_clear_error_and_the_next_run_works(sample_model, held_out, large_volume):
    _, volume, truth = held_out[0]
    with Runner(device="cpu") as local:
        job = local.submit(sample_model, large_volume)
        _wait_for_inference(job)
        os.kill(local.client.pid, signal.SIGKILL)
        with pytest.raises(WorkerError, match=r"stopped unexpectedly \(killed by signal SIGKILL\) while inference"):
            job.wait(timeout=30)
        again = local.run(sample_model, volume)
    assert min(dice_per_label(again.labelmap.array, truth, again.labels).values()) >= MINIMUM_DICE


def test_cancel_stops_within_two_seconds_and_leaves_no_process(sample_model, large_volume):
    volume = large_volume
    others = {child.pid for child in psutil.Process().children(recursive=True)}  # e.g. the shared runner's worker
    with Runner(device="cpu") as local:
        job = local.submit(sample_model, volume)
        _wait_for_inference(job)
        worker = psutil.Process(local.client.pid)
        started = time.monotonic()
        job.cancel()
        assert time.monotonic() - started < 2.0
        with pytest.raises(Cancelled, match="cancelled by the user while inference"):
            job.wait()
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
        assert {child.pid for child in psutil.Process().children(recursive=True)} <= others
        assert local.run(sample_model, volume).labels == {1: "organ", 2: "lesion"}


def _version() -> str:
    import sys

    return f"{sys.version_info.major}.{sys.version_info.minor}"


def test_fast_argmax_matches_torch_including_ties():
    import torch

    from MonaiDeployerLib.inference.backends import argmax_over_channels

    scores = torch.randint(0, 3, (4, 9, 8, 7)).float()  # many ties: the first maximum must win, as in torch
    assert torch.equal(argmax_over_channels(scores).long(), torch.argmax(scores, dim=0))


def test_warmup_moves_the_imports_before_the_first_run(tiny_models):
    with Runner(device="cpu") as fresh:
        assert "import" in fresh.warmup(timeout=120)["timings"]
        result = fresh.run(tiny_models["identity"], Volume(np.zeros((4, 4, 4), np.float32)))
    assert "import" not in result.timings and result.warm["imports"]


def test_a_runner_closed_during_its_background_warm_up_stops_at_once_and_starts_no_worker_again():
    """The panel closes a runner when the worker Python or device changes, maybe while it warms up; work still
    queued for it (the info card) must not start a worker nobody owns."""
    fresh = Runner(device="cpu")
    call = fresh.begin_warmup()
    assert call is not None and fresh.warmed
    worker = psutil.Process(fresh.client.pid)
    started = time.monotonic()
    fresh.close()  # torch and MONAI are still being imported: a polite request would wait for that
    assert time.monotonic() - started < 3
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    with pytest.raises(WorkerError, match="this runner was closed"):
        fresh.environment()
    assert fresh.client.pid is None
