"""The command line as a batch user runs it: ``python -m MonaiDeployerLib inspect|run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from MonaiDeployerLib import Volume, read_volume, write_volume
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label


def cli(*arguments) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "MonaiDeployer")}
    return subprocess.run([sys.executable, "-m", "MonaiDeployerLib", *map(str, arguments)],
                          capture_output=True, text=True, env=environment, timeout=300, check=False)


def test_run_reaches_the_dice_target_and_writes_named_segments(sample_model, held_out, tmp_path):
    for case, volume, truth in held_out:
        source = write_volume(tmp_path / f"{case['name']}.nii.gz", volume)
        target = tmp_path / f"{case['name']}.seg.nrrd"
        finished = cli("run", sample_model, source, target, "--device", "cpu", "--json")
        assert finished.returncode == 0, finished.stderr
        report = json.loads(finished.stdout)
        assert report["labels"] == {"1": "organ", "2": "lesion"}
        labelmap = read_volume(target)
        assert labelmap.same_grid(volume, tolerance=1e-5), case["name"]
        scores = dice_per_label(labelmap.array, truth, (1, 2))
        assert min(scores.values()) >= MINIMUM_DICE, (case["name"], scores)
        assert "Segment1_Name:=lesion" in target.read_bytes()[:4000].decode("latin-1")


def test_inspect_describes_the_package_and_checks_the_worker(sample_model):
    finished = cli("inspect", sample_model)
    assert finished.returncode == 0, finished.stderr
    assert "Phantom organ and lesion (tiny UNet) 1.0.0" in finished.stdout
    assert "labels:       1=organ, 2=lesion" in finished.stdout
    assert "requires:     torch>=" in finished.stdout
    assert "PROBLEM" not in finished.stdout
    described = json.loads(cli("inspect", sample_model, "--json").stdout)
    assert described["mode"] == "torchscript" and described["requirement_problems"] == []


@pytest.mark.parametrize(("make", "cause"), [
    (lambda folder, model, volume: ("run", folder / "no.ts", volume, folder / "out.nrrd"), "model package not found"),
    (lambda folder, model, volume: ("run", model, folder / "no.nii.gz", folder / "out.nrrd"), "input file not found"),
    (lambda folder, model, volume: ("run", model, volume, folder / "out.png"), "unsupported output file type"),
    (lambda folder, model, volume: ("run", model, volume, folder / "gone" / "out.nrrd"), "output folder does not"),
    (lambda folder, model, volume: ("run", model, volume, "/proc/out.nrrd"), "output is not writable"),
    (lambda folder, model, volume: ("run", model, _flat(folder), folder / "out.nrrd"), "the input is 2D"),
])
def test_bad_input_exits_non_zero_with_one_line_and_writes_nothing(sample_model, tmp_path, make, cause):
    volume = write_volume(tmp_path / "ct.nrrd", Volume(np.zeros((16, 16, 16), np.float32)))
    arguments = make(tmp_path, sample_model, volume)
    before = sorted(os.listdir(tmp_path))
    finished = cli(*arguments)
    assert finished.returncode == 1
    assert finished.stderr.startswith("error: ") and cause in finished.stderr, finished.stderr
    assert finished.stderr.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == before


def _flat(folder):
    return write_volume(folder / "flat.nii.gz", Volume(np.zeros((16, 16, 1), np.float32)))
