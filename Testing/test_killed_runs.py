"""A command line killed with SIGKILL (what an out-of-memory kill or a crash of Slicer does) leaves nothing.

The run is killed while its worker imports torch, during inference, and while the output file is
written; afterwards no process of the run is left, and no file: neither the runner's private
folder (the volume as ``input.npy``) nor a partial output. When the worker is killed too, the
next runner removes what was left. Containers are covered with the MAP tests (test_maps.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import LIBRARY_TEMP, REPO_ROOT

from MonaiDeployerLib import Runner, Volume, write_volume

SHAPE = (256, 256, 160)  # big enough that the forward pass and writing the output each take a while here


def threshold_model(folder: Path, busy_passes: int) -> str:
    """A real TorchScript model that labels the voxels above 0, after ``busy_passes`` poolings of the volume
    (about 0.1-0.2 s each on this kind of machine)."""
    import torch

    class Threshold(torch.nn.Module):
        def __init__(self, passes: int):
            super().__init__()
            self.passes = passes

        def forward(self, x):
            busy = x
            for _ in range(self.passes):
                busy = torch.nn.functional.avg_pool3d(busy, 3, 1, 1)
            return torch.cat([torch.zeros_like(x), x + 0 * busy[:, :1]], dim=1)

    path = folder / f"threshold-{busy_passes}.ts"
    torch.jit.save(torch.jit.script(Threshold(busy_passes)), str(path))
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """By stage: a quick model, and for the forward pass one that keeps it busy for 10-30 s here."""
    folder = tmp_path_factory.mktemp("models")
    quick = threshold_model(folder, 0)
    return {"importing": quick, "inference": threshold_model(folder, 120), "writing": quick}


@pytest.fixture(scope="module")
def noise_volume(tmp_path_factory) -> str:
    """Noise, so that the labelmap compresses badly and writing it takes long enough to be caught."""
    path = tmp_path_factory.mktemp("case") / "noise.nii"
    write_volume(str(path), Volume(np.random.default_rng(5).standard_normal(SHAPE, dtype=np.float32)))
    return str(path)


def start_cli(model: str, case: str, output: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "MonaiDeployerLib", "run", model, case, str(output),
                             "--device", "cpu"],
                            cwd=REPO_ROOT / "MonaiDeployer", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def private_folder_of(pid: int) -> Path | None:
    for owner_file in LIBRARY_TEMP.glob("monaideployer-*/owner.json"):
        try:
            if json.loads(owner_file.read_text())["pid"] == pid:
                return owner_file.parent
        except (OSError, ValueError):
            continue  # being written
    return None


def torch_loaded(process: psutil.Process) -> bool:
    with open(f"/proc/{process.pid}/maps", encoding="utf-8") as maps:
        return "libtorch" in maps.read()


def wait_for(condition, what: str, seconds: float = 120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.002)
    raise AssertionError(f"never saw {what}")


def run_until(stage: str, cli: subprocess.Popen, output: Path) -> tuple:
    """Wait for ``stage`` of the run; (worker, its processes, private folder) just before the kill."""
    worker = wait_for(lambda: next(iter(psutil.Process(cli.pid).children()), None), "the worker start")
    folder = wait_for(lambda: private_folder_of(cli.pid), "the runner's private folder")
    volume_bytes = int(np.prod(SHAPE)) * 4
    wait_for(lambda: any(path.stat().st_size > volume_bytes for path in folder.glob("run-*/input.npy")),
             "the input handed to the worker")
    if stage == "importing":  # torch's library is mapped early in its import; torch and MONAI take seconds more
        wait_for(lambda: torch_loaded(worker), "the worker importing torch")
    elif stage == "inference":
        wait_for(lambda: torch_loaded(worker), "the worker importing torch")
        time.sleep(6)  # the rest of torch, MONAI and the model take a few seconds; the forward pass far longer
        assert not list(folder.glob("run-*/output.npy")), "the forward pass ended before the kill"
    else:
        wait_for(lambda: next(output.parent.glob(".partial-*"), None), "the output being written")
    assert cli.poll() is None, "the command line ended before the kill"
    return worker, [worker, *worker.children(recursive=True)], folder


def cleaners_of(folder: Path) -> list:
    """The processes that clean up after a worker whose owner died (they name the folder)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(folder) in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.mark.parametrize("stage", ["importing", "inference", "writing"])
def test_a_killed_command_line_leaves_no_process_and_no_file(models, noise_volume, tmp_path, stage):
    output = tmp_path / "out" / "seg.seg.nrrd"
    output.parent.mkdir()
    cli = start_cli(models[stage], noise_volume, output)
    try:
        _, processes, folder = run_until(stage, cli, output)
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(timeout=10)
        _, alive = psutil.wait_procs(processes, timeout=30)
        assert alive == [], f"still running after the kill: {[process.cmdline()[:3] for process in alive]}"
    finally:
        cli.kill()
    wait_for(lambda: not folder.exists() and not cleaners_of(folder), "the run's traces removed", seconds=60)
    assert list(output.parent.iterdir()) == [], "a partial or unfinished output was left"


def test_a_new_runner_removes_what_a_killed_runner_and_worker_left(models, noise_volume, tmp_path):
    """Both killed at once (the worker frozen first, so it cannot clean up): the next runner finds the folder of a
    dead owner and removes it."""
    cli = start_cli(models["importing"], noise_volume, tmp_path / "seg.nii.gz")
    try:
        worker, processes, folder = run_until("importing", cli, tmp_path / "seg.nii.gz")
        os.kill(worker.pid, signal.SIGSTOP)
        os.kill(cli.pid, signal.SIGKILL)
        os.killpg(worker.pid, signal.SIGKILL)
        cli.wait(timeout=10)
        psutil.wait_procs(processes, timeout=30)
    finally:
        cli.kill()
    assert list(folder.glob("run-*/input.npy")), "the folder of the dead runner should still be there"
    with Runner(device="cpu") as runner:
        assert runner.private_folder != str(folder)
        assert not folder.exists()
