"""Batches: many cases of mixed kinds through one warm worker, from the command line (``batch``) and the API
(``Runner.run_many``): Dice per case on its own grid, failures one line each, nothing half-written, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import REPO_ROOT, as_in_a_terminal, truth_on
from test_cli import cli

from MonaiDeployerLib import InputError, OutputError, Runner, Volume, read_volume, write_volume
from MonaiDeployerLib.imageio.dicom import read_dicom_seg
from MonaiDeployerLib.runs.case_outputs import CaseOutputs
from MonaiDeployerLib.runs.cases import Case, find_cases
from MonaiDeployerLib.testing import sampledata
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label

LABELS = (1, 2)


def test_a_mixed_batch_meets_dice_on_every_grid_names_the_corrupt_case_and_leaves_no_partial_file(
        sample_model, mixed_inputs, tmp_path):
    output = tmp_path / "segmentations"
    finished = cli("batch", sample_model, mixed_inputs["folder"], "--output-dir", output, "--device", "cpu", "--json")
    assert finished.returncode == 1, finished.stderr
    lines = [json.loads(line) for line in finished.stdout.splitlines()]
    by_case = {line["case"]: line for line in lines if line["event"] == "case"}
    corrupt = str(mixed_inputs["folder"] / "corrupt.nii.gz")
    assert by_case[corrupt]["status"] == "failed"
    assert by_case[corrupt]["error"].startswith(f"cannot read {corrupt}: ") and "\n" not in by_case[corrupt]["error"]
    assert lines[-1] == {**lines[-1], "event": "summary", "cases": 5, "done": 4, "failed": 1, "skipped": 0}
    written = sorted(path.name for path in output.iterdir())
    expected = sorted(f"{stem}.seg.nrrd" for stem in mixed_inputs["seeds"])
    assert written == expected  # nothing for the corrupt case, no partial file
    for stem, seed in mixed_inputs["seeds"].items():
        labelmap = read_volume(output / f"{stem}.seg.nrrd")
        assert np.allclose(labelmap.ijk_to_ras, mixed_inputs["grids"][stem], atol=1e-4), stem
        scores = dice_per_label(labelmap.array, truth_on(labelmap, seed), LABELS)
        assert min(scores.values()) >= MINIMUM_DICE, (stem, scores)
    assert (output / "PAT-001_CT1_S1-Abdomen-lps-like.seg.nrrd").read_bytes()[:4000].count(b"Segment1_Name:=lesion")


def test_a_dicom_series_is_read_with_its_exact_geometry(mixed_inputs):
    case = next(case for case in find_cases([mixed_inputs["folder"] / "dicom"]) if "lps-like" in case.output_stem)
    held = next(held for held in sampledata.held_out_cases() if held["name"] == "lps-like")
    image, _truth = sampledata.render_phantom(held["shape"], held["ijk_to_ras"], held["seed"])
    volume = case.read()
    assert volume.same_grid(Volume(image, held["ijk_to_ras"]), tolerance=1e-6)
    assert np.abs(volume.array - image).max() < 0.02  # the series stores HU with a slope of (range / 65000)
    assert len(case.dicom_files) == held["shape"][2]


def test_a_dicom_seg_references_its_series_and_lands_on_its_slices(sample_model, mixed_inputs, tmp_path):
    import pydicom

    output = tmp_path / "seg"
    finished = cli("batch", sample_model, mixed_inputs["folder"] / "dicom", "--output-dir", output, "--suffix", ".dcm",
                   "--device", "cpu")
    assert finished.returncode == 0, finished.stderr
    for case in find_cases([mixed_inputs["folder"] / "dicom"]):
        path = output / f"{case.output_stem}.dcm"
        seg = pydicom.dcmread(path)
        source = pydicom.dcmread(case.dicom_files[0], stop_before_pixels=True)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
        assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
        labelmap, labels = read_dicom_seg(str(path))
        assert labels == {1: "organ", 2: "lesion"}
        volume = case.read()
        placed = onto_grid(labelmap, volume)
        scores = dice_per_label(placed, truth_on(volume, mixed_inputs["seeds"][case.output_stem]), LABELS)
        assert min(scores.values()) >= MINIMUM_DICE, (case.output_stem, scores)
    refused = cli("batch", sample_model, mixed_inputs["folder"], "--output-dir", tmp_path / "no", "--suffix", ".dcm")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: a DICOM SEG references the DICOM series it was made from: ")
    assert not (tmp_path / "no").exists() or not any((tmp_path / "no").iterdir())


def onto_grid(labelmap: Volume, grid: Volume) -> np.ndarray:
    """A SEG's voxels (cropped to its non-empty slices, in any slice order) at their places on ``grid``."""
    mapping = np.linalg.inv(grid.ijk_to_ras) @ labelmap.ijk_to_ras
    assert np.allclose(mapping, np.round(mapping), atol=1e-3), "the SEG is not on the series' grid"
    indices = np.indices(labelmap.shape).reshape(3, -1)
    target = np.round(mapping[:3, :3] @ indices + mapping[:3, 3:]).astype(int)
    placed = np.zeros(grid.shape[:3], dtype=np.uint8)
    placed[tuple(target)] = labelmap.array.reshape(-1)
    return placed


def test_an_interrupted_batch_leaves_whole_outputs_and_skip_existing_runs_exactly_the_rest(sample_model, tmp_path):
    held = next(case for case in sampledata.held_out_cases() if case["name"] == "anisotropic")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for number in range(6):
        image, _truth = sampledata.render_phantom(held["shape"], held["ijk_to_ras"], 2000 + number)
        write_volume(inputs / f"case{number}.nii.gz", Volume(image, held["ijk_to_ras"]))
    output = tmp_path / "out"
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "MonaiDeployer")}
    process = subprocess.Popen([sys.executable, "-m", "MonaiDeployerLib", "batch", sample_model, str(inputs),
                                "--output-dir", str(output), "--device", "cpu", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
                               preexec_fn=as_in_a_terminal)
    first = [json.loads(process.stdout.readline()) for _ in range(2)]
    process.send_signal(signal.SIGINT)  # as Ctrl-C does, while the third case runs
    rest, errors = process.communicate(timeout=60)
    assert process.returncode == 130, errors
    assert "interrupted; the finished outputs are whole" in errors
    summary = json.loads(rest.splitlines()[-1])
    assert summary["interrupted"] and summary["not_run"] >= 1
    done_before = {os.path.basename(line["outputs"][0]) for line in first}
    done_before |= {os.path.basename(json.loads(line)["outputs"][0]) for line in rest.splitlines()[:-1]}
    assert sorted(path.name for path in output.iterdir()) == sorted(done_before)  # no partial file
    for name in done_before:
        assert read_volume(output / name).shape == held["shape"]

    resumed = cli("batch", sample_model, inputs, "--output-dir", output, "--device", "cpu", "--skip-existing",
                  "--json")
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(line) for line in resumed.stdout.splitlines()]
    ran = {os.path.basename(line["outputs"][0]) for line in lines if line.get("status") == "done"}
    skipped = {os.path.basename(line["outputs"][0]) for line in lines if line.get("status") == "skipped"}
    assert skipped == done_before
    assert ran == {f"case{number}.seg.nrrd" for number in range(6)} - done_before


class RecordedCase(Case):
    """A real case whose reading is timed, to see that reading overlaps the previous case's run, and whose reader's
    priority is noted."""

    def read(self) -> Volume:
        self.read_started = time.monotonic()
        self.reader_niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return super().read()


def test_run_many_pipelines_the_cases_through_one_worker_that_does_not_grow(sample_model):
    held = next(case for case in sampledata.held_out_cases() if case["name"] == "anisotropic")
    seeds = list(range(3000, 3020))
    cases = [RecordedCase(f"seed {seed}", f"case-{seed}", volume=Volume(
        sampledata.render_phantom(held["shape"], held["ijk_to_ras"], seed)[0], held["ijk_to_ras"])) for seed in seeds]
    handed_on, memory = [], []
    with Runner(device="cpu") as runner:
        for index, outcome in enumerate(runner.run_many(sample_model, cases)):
            handed_on.append(time.monotonic())
            assert outcome.ok, outcome.error
            assert outcome.case is cases[index] and outcome.source is cases[index].volume  # in order
            assert outcome.result.warm["worker"] == (index > 0)  # one worker for the whole batch
            scores = dice_per_label(outcome.result.labelmap.array, truth_on(cases[index].volume, seeds[index]),
                                    LABELS)
            assert min(scores.values()) >= MINIMUM_DICE, (seeds[index], scores)
            memory.append(outcome.result.worker_memory)
    for index in range(len(cases) - 1):  # case n + 1 was being read before case n was handed on
        assert cases[index + 1].read_started < handed_on[index]
    assert {case.reader_niceness for case in cases} == {19}  # reading takes the cores the worker leaves idle
    assert memory[19] <= 1.05 * memory[1], [round(value / 2**20) for value in memory]


def test_a_failing_case_is_one_outcome_and_the_batch_goes_on(runner, sample_model, held_out):
    _case, volume, truth = held_out[1]
    two_channels = Volume(np.stack([volume.array, volume.array], axis=-1), volume.ijk_to_ras)
    flat = Volume(np.zeros((32, 32, 1), np.float32))
    outcomes = list(runner.run_many(sample_model, [volume, two_channels, flat, volume]))
    assert [outcome.ok for outcome in outcomes] == [True, False, False, True]
    assert str(outcomes[1].error) == "the model takes 1 input channels; the input has 2"
    assert str(outcomes[2].error).startswith("the input is 2D (shape 32x32x1)")
    scores = dice_per_label(outcomes[3].result.labelmap.array, truth, LABELS)
    assert min(scores.values()) >= MINIMUM_DICE


def test_two_jobs_run_the_cases_in_two_workers(sample_model, held_out):
    volumes = [volume for _case, volume, _truth in held_out] * 2
    with Runner(device="cpu") as runner:
        outcomes = list(runner.run_many(sample_model, volumes, jobs=2))
    assert sorted(outcome.case.name for outcome in outcomes) == sorted(f"volume {n}" for n in range(1, 7))
    assert all(outcome.ok for outcome in outcomes)
    assert sum("start_worker" in outcome.result.timings for outcome in outcomes) == 2


def test_cases_are_found_in_a_stable_order_and_outputs_that_would_collide_are_refused(tmp_path):
    volume = Volume(np.zeros((4, 4, 4), np.int16))
    for relative in ("b/ct.nrrd", "a/ct.nii.gz", "a/z.nii", "c.nrrd", ".hidden/x.nrrd", "a/notes.txt"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        if relative.endswith(".txt"):
            (tmp_path / relative).write_text("left out")
        else:
            write_volume(tmp_path / relative, volume)
    # a file meta group length (0002,0000) of type UL cut after its first byte
    (tmp_path / "a" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00\x01")
    cases = find_cases([tmp_path])
    assert [case.output_stem for case in cases] == ["c", "a/ct", "a/z", "b/ct", "a/broken.dcm"]
    assert cases[1].path == str(tmp_path / "a" / "ct.nii.gz")
    with pytest.raises(InputError, match=r"^cannot read the DICOM file .*broken\.dcm: "):
        cases[4].read()  # a case that fails alone, not a batch refused
    assert [case.output_stem for case in find_cases([tmp_path], outside=tmp_path / "b")] == [
        "c", "a/ct", "a/z", "a/broken.dcm"]  # earlier outputs in the output folder are not inputs
    with pytest.raises(InputError, match=r"a/ct.nii.gz and .*b/ct.nrrd would write the same output ct"):
        find_cases([tmp_path / "a" / "ct.nii.gz", tmp_path / "b" / "ct.nrrd"])
    with pytest.raises(InputError, match="input not found: "):
        find_cases([tmp_path / "missing.nrrd"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no volume file or DICOM series in the folder"):
        find_cases([tmp_path / "empty"])
    with pytest.raises(InputError, match="not a volume file or a folder"):
        find_cases([tmp_path / "a" / "notes.txt"])
    with pytest.raises(OutputError, match=r"unsupported output suffix \.png"):
        CaseOutputs(str(tmp_path), ".png")


def test_the_panels_batch_file_types_are_the_volume_files_the_library_writes():
    from MonaiDeployerLib.choices import BATCH_OUTPUT_SUFFIXES
    from MonaiDeployerLib.imageio.volume import SUFFIXES

    assert BATCH_OUTPUT_SUFFIXES == SUFFIXES
