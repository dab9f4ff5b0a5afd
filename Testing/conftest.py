"""Shared fixtures: the library on the path, a private temp folder checked after every test, one warm runner."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "MonaiDeployer"))

# Every temporary file the library makes lands here, so a test can prove none is left behind.
LIBRARY_TEMP = Path(tempfile.mkdtemp(prefix="monaideployer-tests-"))
os.environ["TMPDIR"] = str(LIBRARY_TEMP)
tempfile.tempdir = str(LIBRARY_TEMP)
# The trust list and unpacked bundles go to a private home, never the user's own.
os.environ["MONAIDEPLOYER_HOME"] = str(LIBRARY_TEMP / "home")

from MonaiDeployerLib import Runner  # noqa: E402
from MonaiDeployerLib.testing import sampledata  # noqa: E402
from MonaiDeployerLib.testing.selftest import SAMPLE_MODEL  # noqa: E402


def as_in_a_terminal() -> None:
    """``preexec_fn`` of a command a test interrupts with SIGINT, as Ctrl-C in a terminal does: a run started from a
    background job (CI's, a ``nohup``) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pytest_sessionfinish(session, exitstatus):
    """The library's temp folder (test volumes, made environments: 2-4 GB a whole run) goes with the session."""
    shutil.rmtree(LIBRARY_TEMP, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_patient_data_left_on_disk():
    """After every test, the library's temp folder holds nothing (failed and cancelled runs included) but the
    private folder of a runner still open (the session's shared runner), with only its owner's name in it."""
    yield
    leftovers = sorted(str(path.relative_to(LIBRARY_TEMP)) for path in LIBRARY_TEMP.glob("monaideployer-*")
                       if not path.is_dir() or {child.name for child in path.iterdir()} - {"owner.json"})
    assert not leftovers, f"temporary files left behind: {leftovers}"


@pytest.fixture(scope="session")
def runner():
    with Runner(device="cpu") as shared:
        yield shared


@pytest.fixture(scope="session")
def sample_model() -> str:
    assert os.path.isfile(SAMPLE_MODEL), "run Testing/make_sample_model.py to build the sample model"
    return SAMPLE_MODEL


@pytest.fixture(scope="session")
def held_out():
    """(case, image volume, truth array) for each held-out phantom."""
    from MonaiDeployerLib import Volume

    cases = []
    for case in sampledata.held_out_cases():
        image, truth = sampledata.render_phantom(case["shape"], case["ijk_to_ras"], case["seed"])
        cases.append((case, Volume(image, case["ijk_to_ras"]), truth))
    return cases


@pytest.fixture
def scene():
    """A fresh real MRML scene (slicer-core), installed as ``slicer.mrmlScene`` as in the application."""
    import slicer

    slicer.mrmlScene = slicer.vtkMRMLScene()
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(True)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """Real TorchScript files with known outputs, for the no-sidecar defaults and the error paths."""
    import torch

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    class TwoClasses(torch.nn.Module):
        def forward(self, x):
            return torch.cat([0.5 - x, x - 0.5], dim=1)

    folder = tmp_path_factory.mktemp("models")
    models = {
        "identity": Identity(),
        "two_classes": TwoClasses(),
        "two_input_channels": torch.nn.Conv3d(2, 2, 3, padding=1),
        "shrinking": torch.nn.Conv3d(1, 2, 3),
    }
    paths = {}
    for name, module in models.items():
        paths[name] = str(folder / f"{name}.ts")
        torch.jit.script(module.eval()).save(paths[name])
    return paths


def assert_held_out_segmented(runner, package, held_out, labels: dict, context: str = "") -> None:
    """Every held-out phantom comes back on its own grid, with ``labels``, each label at Dice >= 0.95."""
    from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label

    for case, volume, truth in held_out:
        result = runner.run(package, volume, trust=True)
        assert result.labelmap.same_grid(volume, tolerance=1e-9), (case["name"], context)
        assert result.labels == labels, (case["name"], context)
        scores = dice_per_label(result.labelmap.array, truth, labels)
        assert min(scores.values()) >= MINIMUM_DICE, (case["name"], context, scores)


def write_series(volume, folder, patient: str, description: str) -> list:
    """A CT series with the volume's exact geometry, its patient and series named (as a scanner would)."""
    import pydicom

    from MonaiDeployerLib.imageio.dicom import write_dicom_series

    os.makedirs(folder)
    paths = write_dicom_series(volume, str(folder))
    for path in paths:
        image = pydicom.dcmread(path)
        image.PatientID, image.SeriesDescription, image.StudyID = patient, description, "CT1"
        image.save_as(path)
    return paths


def truth_on(volume, seed: int):
    """The phantom's truth drawn on ``volume``'s own grid (it is defined in RAS)."""
    return sampledata.render_phantom(volume.shape[:3], volume.ijk_to_ras, seed)[1]


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory) -> dict:
    """NRRD and NIfTI files, a folder of two DICOM series and a corrupt file: {"folder", "seeds" by output stem,
    "grids" by output stem}."""
    from MonaiDeployerLib import Volume, write_volume

    folder = tmp_path_factory.mktemp("cohort")
    cases = {case["name"]: case for case in sampledata.held_out_cases()}
    seeds, grids = {}, {}
    for name, suffix in (("oblique", ".nrrd"), ("anisotropic", ".nii.gz")):
        case = cases[name]
        image, _truth = sampledata.render_phantom(case["shape"], case["ijk_to_ras"], case["seed"])
        write_volume(folder / f"{name}{suffix}", Volume(image, case["ijk_to_ras"]))
        seeds[name], grids[name] = case["seed"], case["ijk_to_ras"]
    for patient, name in (("PAT-001", "lps-like"), ("PAT/002", "oblique")):
        case = cases[name]
        image, _truth = sampledata.render_phantom(case["shape"], case["ijk_to_ras"], case["seed"])
        write_series(Volume(image, case["ijk_to_ras"]), folder / "dicom" / name, patient, f"Abdomen {name}")
        stem = f"{patient.replace('/', '-')}_CT1_S1-Abdomen-{name}"
        seeds[stem], grids[stem] = case["seed"], case["ijk_to_ras"]
    (folder / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 not a whole gzip stream")
    (folder / "README.txt").write_text("not a volume: left out")
    return {"folder": folder, "seeds": seeds, "grids": grids}


@pytest.fixture
def zoo():
    """A Model Zoo on loopback (zoo_server.serving_zoo)."""
    from zoo_server import serving_zoo

    with serving_zoo() as server:
        yield server
