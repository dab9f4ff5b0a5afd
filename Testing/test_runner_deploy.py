"""Deploy mode end to end: the sample NIfTI app cold and warm through API, CLI and MRML; failing apps.

Every app here is a real MONAI Deploy App SDK application run on Holoscan's CPU executor.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, assert_held_out_segmented

from MonaiDeployerLib import (
    Cancelled,
    PackageError,
    Runner,
    Volume,
    WorkerError,
    open_package,
    read_volume,
    write_volume,
)
from MonaiDeployerLib.packages import package_facts
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, SAMPLE_MODEL, dice_per_label

NIFTI_APP = REPO_ROOT / "Testing" / "deploy_apps" / "phantom_nifti"
DICOM_APP = REPO_ROOT / "Testing" / "deploy_apps" / "phantom_dicom"
LABELS = {1: "organ", 2: "lesion"}


@pytest.fixture(scope="module")
def deploy_runner():
    """A worker of its own: an app that hangs or is cancelled must not disturb the shared one."""
    with Runner(device="cpu") as runner:
        yield runner


@pytest.mark.parametrize("launch", ["cold", "warm"])
@pytest.mark.parametrize(("app", "input_format"), [(NIFTI_APP, "nifti"), (DICOM_APP, "dicom")], ids=["nifti", "dicom"])
def test_the_sample_apps_segment_held_out_volumes(deploy_runner, held_out, launch, app, input_format):
    package = open_package(app, model=SAMPLE_MODEL, launch=launch)
    assert (package.mode, package.settings.input_format) == ("deploy", input_format)
    assert_held_out_segmented(deploy_runner, package, held_out, LABELS, launch)


def test_a_warm_app_is_imported_once_and_built_again_for_each_run(held_out):
    package = open_package(NIFTI_APP, model=SAMPLE_MODEL)
    _, volume, _ = held_out[1]
    with Runner(device="cpu") as fresh:
        first = fresh.run(package, volume, trust=True)
        second = fresh.run(package, volume, trust=True)
    assert "import_app" in first.timings and "import_app" not in second.timings
    assert "app_cold" not in second.timings and second.warm["imports"]
    assert np.array_equal(first.labelmap.array, second.labelmap.array)


@pytest.mark.parametrize(("app", "launch", "case_index"), [(NIFTI_APP, "cold", 2), (NIFTI_APP, "warm", 1),
                                                            (DICOM_APP, "cold", 0), (DICOM_APP, "warm", 2)])
def test_cli_runs_the_app_into_named_segments(tmp_path, held_out, app, launch, case_index):
    case, volume, truth = held_out[case_index]
    source, output = tmp_path / "case.nii.gz", tmp_path / "seg.seg.nrrd"
    write_volume(source, volume)
    extra = ["--cold"] if launch == "cold" else []
    finished = _cli("run", str(app), str(source), str(output), "--model", SAMPLE_MODEL, "--trust",
                    "--device", "cpu", *extra)
    assert finished.returncode == 0, finished.stderr
    scores = dice_per_label(read_volume(output).array, truth, LABELS)
    assert min(scores.values()) >= MINIMUM_DICE, (case["name"], launch, scores)
    assert "Segment1_Name:=lesion" in output.read_bytes()[:4096].decode("latin-1")


@pytest.mark.parametrize("launch", ["cold", "warm"])
@pytest.mark.parametrize("app", [NIFTI_APP, DICOM_APP], ids=["nifti", "dicom"])
def test_the_mrml_logic_runs_the_app(scene, deploy_runner, launch, app):
    from MonaiDeployerLib.scene import mrml
    from MonaiDeployerLib.scene.noderun import NodeSegmentation
    from MonaiDeployerLib.testing import sampledata
    from MonaiDeployerLib.testing.selftest import held_out_node, node_array

    case = sampledata.held_out_cases()[0]
    node, truth = held_out_node(scene, case)
    package = open_package(app, model=SAMPLE_MODEL, launch=launch)
    output = NodeSegmentation(deploy_runner, package, node, trust=True).wait()
    assert np.allclose(mrml.ijk_to_ras(output), mrml.ijk_to_ras(node), atol=1e-9)
    scores = dice_per_label(node_array(output), truth, LABELS)
    assert min(scores.values()) >= MINIMUM_DICE, (launch, scores)


def test_a_dicom_app_gets_the_original_series_when_the_volume_came_from_one(deploy_runner, tmp_path, held_out):
    """The files hold the phantom; the volume handed over is blank: only the files can give these labels."""
    from MonaiDeployerLib.imageio.dicom import write_dicom_series

    _, volume, truth = held_out[0]
    originals = write_dicom_series(volume, str(tmp_path))
    blank = Volume(np.zeros(volume.shape, np.float32), volume.ijk_to_ras)
    result = deploy_runner.run(open_package(DICOM_APP, model=SAMPLE_MODEL), blank, trust=True, dicom_files=originals)
    scores = dice_per_label(result.labelmap.array, truth, LABELS)
    assert min(scores.values()) >= MINIMUM_DICE, scores
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(Path(path).name for path in originals)


def test_the_input_format_can_be_overridden():
    assert open_package(NIFTI_APP, model=SAMPLE_MODEL, input_format="dicom").settings.input_format == "dicom"
    with pytest.raises(PackageError, match=r"unknown input format 'png' \(use nifti or dicom\)"):
        open_package(NIFTI_APP, model=SAMPLE_MODEL, input_format="png")


def test_an_untrusted_app_is_refused(deploy_runner):
    with pytest.raises(PackageError, match=r"is not trusted yet\. A deploy package runs code"):
        deploy_runner.run(open_package(NIFTI_APP, model=SAMPLE_MODEL), Volume(np.zeros((8, 8, 8), np.float32)))


def test_an_app_without_a_model_asks_for_one():
    with pytest.raises(PackageError, match=r"no models/ folder and no model file; choose the model the app takes "
                                           r"with -m \(--model"):
        open_package(NIFTI_APP)


@pytest.mark.parametrize("launch", ["cold", "warm"])
def test_an_app_that_raises_shows_its_own_last_traceback_lines(deploy_runner, tmp_path, launch):
    app = _write_app(tmp_path, 'raise ValueError("no lungs found in this phantom")')
    with pytest.raises(PackageError, match=r"ValueError: no lungs found in this phantom") as failed:
        deploy_runner.run(open_package(app, launch=launch), Volume(np.zeros((8, 8, 8), np.float32)), trust=True)
    assert "\n" not in str(failed.value)
    assert "Traceback" in str(failed.value) or "line" in str(failed.value)


SCRIPT_APP = """
import glob
import os
import sys

import nibabel
import numpy as np

arguments = dict(zip(sys.argv[1::2], sys.argv[2::2]))  # at import, as a script does: -i IN -o OUT -m MODEL
image = nibabel.load(glob.glob(os.path.join(arguments["-i"], "*.nii*"))[0])
labels = (np.asanyarray(image.dataobj) > 100).astype(np.uint8)
nibabel.save(nibabel.Nifti1Image(labels, image.affine), os.path.join(arguments["-o"], "seg.nii.gz"))
"""


def test_a_script_that_is_not_a_deploy_app_runs_cold_and_says_why(deploy_runner, tmp_path, held_out):
    """Importing it would run it with the worker's arguments: its source shows no Application, so it runs cold."""
    (tmp_path / "model.ts").write_bytes(b"unused")
    (tmp_path / "app.py").write_text(SCRIPT_APP)
    package = open_package(tmp_path)
    assert package.settings.launch == "cold"
    assert ("launch", "cold: python app.py -i -o -m in a new process each run (app.py defines no MONAI Deploy "
                      "Application class)") in package_facts(package, trusted=True)
    volume = held_out[2][1]
    result = deploy_runner.run(package, volume, trust=True)
    assert result.notes == ["the app ran cold: app.py defines no MONAI Deploy Application class"]
    assert np.array_equal(result.labelmap.array, (volume.array > 100).astype(np.uint8))


def test_an_output_on_another_grid_is_resampled_as_monai_would_without_torch():
    """numpy's nearest resampling onto the input grid (a worker without torch) gives MONAI's SpatialResample labels,
    0 outside the output's grid."""
    import torch
    from monai.data import MetaTensor

    from MonaiDeployerLib.inference.backends import labels_on_grid, resample_nearest

    labels = np.zeros((40, 50, 30), np.uint8)
    labels[10:30, 5:40, 4:25], labels[15:20, 20:30, 10:15] = 1, 2
    written = np.eye(4)
    written[:3, :3], written[:3, 3] = np.diag([1.3, 0.9, 2.1]), [5, -3, 2]
    angle = np.deg2rad(17)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    grid = np.eye(4)
    grid[:3, :3], grid[:3, 3] = rotation @ np.diag([-0.8, 1.1, 1.7]), [40, -10, 0]
    target = Volume(np.zeros((60, 45, 40), np.float32), grid)
    ours = labels_on_grid(Volume(labels, written), target.shape, grid)
    monai = resample_nearest(MetaTensor(torch.from_numpy(labels.astype(np.float32))[None],
                                        affine=torch.as_tensor(written)), target)[0].numpy()
    assert np.count_nonzero(ours == 2) > 300 and np.count_nonzero(ours == 0) > 10000
    assert np.array_equal(ours, monai)


def test_a_cold_app_s_last_words_keep_their_order(deploy_runner, tmp_path):
    """What it printed before it exited comes before its exit message (its stdout would be buffered in a pipe)."""
    (tmp_path / "model.ts").write_bytes(b"unused")
    (tmp_path / "app.py").write_text(textwrap.dedent('''\
        from monai.deploy.core import Application


        class TestApp(Application):
            def compose(self):
                pass


        if __name__ == "__main__":
            print("segmenting")
            raise SystemExit("no lungs found in this phantom")
        '''))
    with pytest.raises(PackageError, match=r"^the app exited with status 1: (.* \| )?segmenting \| no lungs "
                                           r"found in this phantom$"):
        deploy_runner.run(open_package(tmp_path, launch="cold"), Volume(np.zeros((8, 8, 8), np.float32)), trust=True)


@pytest.mark.parametrize(("body", "cause"), [
    ("pass", r"the app wrote no NIfTI, NRRD or DICOM SEG output \(it wrote nothing\)"),
    ('(out / "notes.txt").write_text("done")',
     r"the app wrote no NIfTI, NRRD or DICOM SEG output \(it wrote notes\.txt\)"),
    ('(out / "seg.nii.gz").write_bytes(b"not a nifti")', r"the app's output seg\.nii\.gz cannot be read: "),
])
def test_an_app_without_a_usable_output_is_named(deploy_runner, tmp_path, body, cause):
    app = _write_app(tmp_path, body)
    with pytest.raises(PackageError, match=cause):
        deploy_runner.run(open_package(app), Volume(np.zeros((8, 8, 8), np.float32)), trust=True)


@pytest.mark.parametrize("launch", ["cold", "warm"])
def test_an_app_that_never_finishes_is_stopped_at_the_time_out(deploy_runner, tmp_path, held_out, launch):
    import psutil

    app = _write_app(tmp_path, "import time\n        time.sleep(3600)")
    with pytest.raises(WorkerError, match=r"no answer from the worker within 20 s while inference; run stopped"):
        deploy_runner.run(open_package(app, launch=launch), Volume(np.zeros((8, 8, 8), np.float32)), trust=True,
                          timeout=20)
    assert not deploy_runner.client.alive
    assert not [child for child in psutil.Process().children(recursive=True) if "app.py" in " ".join(child.cmdline())]
    package = open_package(NIFTI_APP, model=SAMPLE_MODEL, launch=launch)
    assert deploy_runner.run(package, held_out[0][1], trust=True).labels == LABELS


def test_cancelling_a_warm_app_leaves_no_process_and_the_next_run_works(deploy_runner, tmp_path, held_out):
    import psutil

    app = _write_app(tmp_path, "import time\n        time.sleep(3600)")
    job = deploy_runner.submit(open_package(app), Volume(np.zeros((8, 8, 8), np.float32)), trust=True)
    while not any(event.stage == "inference" for event in job.poll(block_seconds=0.1)):
        assert not job.done, job.error
    worker = psutil.Process(deploy_runner.client.pid)
    job.cancel()
    with pytest.raises(Cancelled):
        job.wait()
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    assert not deploy_runner.client.alive
    package = open_package(NIFTI_APP, model=SAMPLE_MODEL)
    assert deploy_runner.run(package, held_out[0][1], trust=True).labels == LABELS


TWO_OUTPUTS = "\n        ".join([
    "import nibabel, numpy",
    'source = nibabel.load(next(inp.glob("*.nii")))',
    "data = numpy.asarray(source.dataobj)",
    'nibabel.save(nibabel.Nifti1Image((data > 0.5).astype("uint8"), source.affine), str(out / "a_first.nii.gz"))',
    '(out / "z").mkdir()',
    'nibabel.save(nibabel.Nifti1Image(2 * (data > 0.8).astype("uint8"), source.affine), str(out / "z" / "b.nii.gz"))',
])


def test_every_output_of_an_app_is_offered(deploy_runner, tmp_path, scene):
    from MonaiDeployerLib.scene import mrml
    from MonaiDeployerLib.scene.noderun import NodeSegmentation

    app = _write_app(tmp_path / "app", TWO_OUTPUTS)
    array = np.random.default_rng(5).random((9, 8, 7), dtype=np.float32)
    volume = Volume(array, np.diag([0.9, -1.2, 2.0, 1.0]))
    result = deploy_runner.run(open_package(app), volume, trust=True)
    assert np.array_equal(result.labelmap.array, (array > 0.5).astype(np.uint8))
    assert [(other.name, other.labels) for other in result.others] == [("z/b.nii.gz", {2: "label_2"})]
    assert np.array_equal(result.others[0].labelmap.array, 2 * (array > 0.8).astype(np.uint8))

    source, output = tmp_path / "in.nii.gz", tmp_path / "seg.nii.gz"
    write_volume(source, volume)
    finished = _cli("run", str(app), str(source), str(output), "--trust")
    assert finished.returncode == 0, finished.stderr
    assert f"wrote {tmp_path / 'seg-2.nii.gz'} (the app's z/b.nii.gz)" in finished.stdout
    assert np.array_equal(read_volume(tmp_path / "seg-2.nii.gz").array, 2 * (array > 0.8).astype(np.uint8))

    node = mrml.volume_node_from_volume(scene, volume, "input")
    run = NodeSegmentation(deploy_runner, open_package(app), node, trust=True)
    run.wait()
    assert [other.GetName() for other in run.other_nodes] == ["input z/b.nii.gz"]


def _write_app(folder: Path, body: str) -> Path:
    """A one-operator SDK app whose operator runs ``body`` with ``inp``/``out`` its folders; model: a dummy file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.ts").write_bytes(b"unused")
    (folder / "app.py").write_text(textwrap.dedent('''\
        from pathlib import Path

        from monai.deploy.conditions import CountCondition
        from monai.deploy.core import Application, Operator


        class Step(Operator):
            def __init__(self, fragment, *args, input_folder, output_folder, **kwargs):
                self.input_folder, self.output_folder = Path(input_folder), Path(output_folder)
                super().__init__(fragment, *args, **kwargs)

            def compute(self, op_input, op_output, context):
                inp, out = self.input_folder, self.output_folder
                BODY


        class TestApp(Application):
            def compose(self):
                context = Application.init_app_context(self.argv)
                self.add_operator(Step(self, CountCondition(self, 1), input_folder=context.input_path,
                                       output_folder=context.output_path, name="step"))


        if __name__ == "__main__":
            TestApp().run()
        ''').replace("BODY", body))
    return folder


def _cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "MonaiDeployerLib", *arguments], capture_output=True, text=True,
                          cwd=REPO_ROOT / "MonaiDeployer", timeout=600)
