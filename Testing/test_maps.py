"""MAP images inspected before they run, with real podman: labels, manifests, resources, CUDA verdict.

The images are built here from the Debian base image ``Testing/setup_containers.sh`` makes; the
tests skip where podman cannot run.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import LIBRARY_TEMP, REPO_ROOT, assert_held_out_segmented

from MonaiDeployerLib import Cancelled, NotAMapError, PackageError, Runner, Volume, open_package
from MonaiDeployerLib.packages.map_image import inspect_map
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, SAMPLE_MODEL, dice_per_label

BASE_IMAGE = "localhost/monaideployer-test-base:bookworm"
SDK_IMAGE = "localhost/monaideployer-test-sdk:cpu"
TEST_MAP = "localhost/monaideployer-test-map:1.0"
PHANTOM_MAP = "localhost/monaideployer-phantom-map:1.0"
NIFTI_APP = REPO_ROOT / "Testing" / "deploy_apps" / "phantom_nifti"
DICOM_APP = REPO_ROOT / "Testing" / "deploy_apps" / "phantom_dicom"
THRESHOLD_APP = REPO_ROOT / "Testing" / "map_apps" / "phantom_threshold"
PHANTOM_DICOM_MAP = "localhost/monaideployer-phantom-dicom-map:1.0"
LABELS = {1: "organ", 2: "lesion"}


def podman_ready() -> bool:
    podman = shutil.which("podman")
    return podman is not None and all(subprocess.run([podman, "image", "exists", image], check=False).returncode == 0
                                      for image in (BASE_IMAGE, SDK_IMAGE))


pytestmark = pytest.mark.skipif(not podman_ready(), reason="podman or the test base image is missing "
                                                            "(run Testing/setup_containers.sh)")

APP_MANIFEST = {"apiVersion": "1.0.0", "command": '["python3", "/opt/holoscan/app/app.py"]',
                "environment": {"HOLOSCAN_INPUT_PATH": "input/", "HOLOSCAN_OUTPUT_PATH": "output/"},
                "input": {"path": "input/", "formats": None}, "output": {"path": "output/", "formats": None},
                "timeout": 0, "version": 1, "workingDirectory": "/var/holoscan"}
PACKAGE_MANIFEST = {"apiVersion": "1.0.0", "applicationRoot": "/opt/holoscan/app", "modelRoot": "/opt/holoscan/models",
                    "models": {"model": "/opt/holoscan/models/model"},
                    "resources": {"cpu": 1, "gpu": 0, "memory": "2Gi", "sharedMemory": "1Gi"}, "version": 1}


@pytest.fixture(scope="module")
def test_map(tmp_path_factory) -> str:
    """A MAP-shaped image: both manifests, OCI labels, HOLOSCAN_* variables, no CUDA."""
    return build_map(tmp_path_factory.mktemp("map"), TEST_MAP, [
        "ENV HOLOSCAN_INPUT_PATH=/var/holoscan/input HOLOSCAN_OUTPUT_PATH=/var/holoscan/output",
        'LABEL org.opencontainers.image.title="Phantom test MAP" org.opencontainers.image.version="1.0"'])


def build_map(context, tag: str, lines: list, base: str = BASE_IMAGE, command: list | None = None) -> str:
    """An image of ``base`` with both MAP manifests (``command`` in app.json) and the Containerfile ``lines``."""
    context.mkdir(parents=True, exist_ok=True)
    manifest = dict(APP_MANIFEST, command=json.dumps(command)) if command else APP_MANIFEST
    (context / "app.json").write_text(json.dumps(manifest))
    (context / "pkg.json").write_text(json.dumps(PACKAGE_MANIFEST))
    (context / "Containerfile").write_text("\n".join([f"FROM {base}", "COPY app.json pkg.json /etc/holoscan/",
                                                      *lines]) + "\n")
    subprocess.run(["podman", "build", "--quiet", "-t", tag, "-f", str(context / "Containerfile"), str(context)],
                   check=True, capture_output=True)
    return tag


def running_containers() -> list:
    return subprocess.run(["podman", "ps", "--filter", "status=running", "--format", "{{.Names}}"],
                          capture_output=True, text=True, check=True).stdout.split()


def our_containers() -> list:
    listed = subprocess.run(["podman", "ps", "-a", "--format", "{{.Image}}"], capture_output=True, text=True,
                            check=True).stdout.split()
    return [image for image in listed if "monaideployer" in image]


def test_a_map_is_described_from_its_manifests_and_labels(test_map):
    facts = inspect_map("podman", test_map)
    assert (facts.title, facts.version) == ("Phantom test MAP", "1.0")
    assert (facts.input_path, facts.output_path) == ("/var/holoscan/input", "/var/holoscan/output")
    assert facts.resources == {"cpu": 1, "gpu": 0, "memory": "2Gi", "sharedMemory": "1Gi"}
    assert facts.environment["HOLOSCAN_OUTPUT_PATH"] == "/var/holoscan/output"
    assert facts.cuda is None
    assert facts.verdict().text == "runs on the CPU only: the image has no CUDA"
    assert our_containers() == []  # the container the manifests were read from is gone


def test_an_image_that_is_not_a_map_is_named(test_map):
    with pytest.raises(PackageError, match=r"is not a MONAI Application Package: it has no /etc/holoscan/app\.json"):
        inspect_map("podman", BASE_IMAGE)
    assert our_containers() == []


def test_cli_inspect_gives_the_verdict_before_any_run(test_map):
    finished = subprocess.run([sys.executable, "-m", "MonaiDeployerLib", "inspect", test_map, "--runtime", "podman"],
                              capture_output=True, text=True, cwd=REPO_ROOT / "MonaiDeployer", check=False)
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    assert lines[0] == "Phantom test MAP 1.0"
    assert "  resources:    cpu 1, gpu 0, memory 2Gi, sharedMemory 1Gi" in lines
    assert "  verdict:      runs on the CPU only: the image has no CUDA" in lines
    assert our_containers() == []


def test_an_image_that_does_not_exist_is_named():
    with pytest.raises(PackageError, match=r"image not found: localhost/no-such-map:0 \(.*\); build or pull it first"):
        inspect_map("podman", "localhost/no-such-map:0")


def package_with_cli(app, tag: str) -> str:
    """``app`` packaged by ``package`` on the SDK base image (Debian, venv with torch CPU)."""
    finished = subprocess.run([sys.executable, "-m", "MonaiDeployerLib", "package", str(app), "--base", SDK_IMAGE,
                               "--tag", tag, "--runtime", "podman", "--model", SAMPLE_MODEL,
                               "--python", "/opt/venv/bin/python"],
                              capture_output=True, text=True, cwd=REPO_ROOT / "MonaiDeployer", check=False)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == f"built {tag}"
    return tag


@pytest.fixture(scope="module")
def phantom_map() -> str:
    return package_with_cli(NIFTI_APP, PHANTOM_MAP)


def test_a_packaged_app_is_a_map(phantom_map):
    facts = inspect_map("podman", phantom_map)
    assert (facts.title, facts.version) == ("Phantom organ and lesion (MONAI Deploy app, NIfTI)", "1.0.0")
    assert (facts.input_path, facts.output_path, facts.input_formats) == ("/var/holoscan/input",
                                                                          "/var/holoscan/output", ["nifti"])
    assert facts.resources == {"cpu": 1, "gpu": 0, "memory": "2Gi"}
    assert facts.environment["HOLOSCAN_MODEL_PATH"] == "/opt/holoscan/models/PhantomUNet.ts"


@pytest.mark.parametrize("launch", ["cold", "warm"])
def test_the_map_segments_held_out_volumes_in_a_hardened_container(phantom_map, held_out, launch):
    with Runner(device="cpu") as runner:
        assert_held_out_segmented(runner, open_package(phantom_map, mode="map", runtime="podman", launch=launch),
                                  held_out, LABELS, launch)
    assert our_containers() == []


@pytest.mark.parametrize("launch", ["cold", "warm"])
def test_a_dicom_map_gets_a_series_or_the_original_files(held_out, tmp_path, launch):
    """The SDK's DICOM operators inside the container; a blank volume with its original series proves the
    originals (links on the host) reach the container as files."""
    from MonaiDeployerLib.imageio.dicom import write_dicom_series

    image = package_with_cli(DICOM_APP, PHANTOM_DICOM_MAP)
    assert inspect_map("podman", image).input_formats == ["dicom"]
    _, volume, truth = held_out[0]
    originals = write_dicom_series(volume, str(tmp_path))
    blank = Volume(np.zeros(volume.shape, np.float32), volume.ijk_to_ras)
    package = open_package(image, mode="map", runtime="podman", launch=launch)
    with Runner(device="cpu") as runner:
        for result in (runner.run(package, volume), runner.run(package, blank, dicom_files=originals)):
            assert result.labels == LABELS  # the DICOM SEG's segment names
            assert result.labelmap.same_grid(volume, tolerance=1e-9)
            assert min(dice_per_label(result.labelmap.array, truth, [1, 2]).values()) >= MINIMUM_DICE
    assert our_containers() == []


def test_a_warm_map_keeps_one_container_and_its_model_between_runs(phantom_map, held_out):
    package = open_package(phantom_map, mode="map", runtime="podman")
    with Runner(device="cpu") as runner:
        first = runner.run(package, held_out[0][1])
        assert len(our_containers()) == 1
        second = runner.run(package, held_out[1][1])
        assert len(our_containers()) == 1
    assert "start_container" in first.timings and "container_import_app" in first.timings
    assert "start_container" not in second.timings and "container_import_app" not in second.timings
    assert second.warm["model"]
    assert our_containers() == []  # closing the runner stopped it


@pytest.mark.parametrize("launch", ["cold", "warm"])
def test_cli_and_mrml_logic_run_the_map(phantom_map, held_out, tmp_path, scene, launch):
    from MonaiDeployerLib import read_volume, write_volume
    from MonaiDeployerLib.scene.noderun import NodeSegmentation
    from MonaiDeployerLib.testing import sampledata
    from MonaiDeployerLib.testing.selftest import held_out_node, node_array

    _, volume, truth = held_out[1]
    source, output = tmp_path / "case.nii.gz", tmp_path / "seg.seg.nrrd"
    write_volume(source, volume)
    finished = subprocess.run([sys.executable, "-m", "MonaiDeployerLib", "run", phantom_map, str(source), str(output),
                               "--runtime", "podman", *(["--cold"] if launch == "cold" else [])],
                              capture_output=True, text=True, cwd=REPO_ROOT / "MonaiDeployer", check=False)
    assert finished.returncode == 0, finished.stderr
    assert "  1 organ: " in finished.stdout and "  2 lesion: " in finished.stdout
    assert min(dice_per_label(read_volume(output).array, truth, [1, 2]).values()) >= MINIMUM_DICE

    node, truth = held_out_node(scene, sampledata.held_out_cases()[2])
    with Runner(device="cpu") as runner:
        package = open_package(phantom_map, mode="map", runtime="podman", launch=launch)
        output_node = NodeSegmentation(runner, package, node).wait()
    assert min(dice_per_label(node_array(output_node), truth, [1, 2]).values()) >= MINIMUM_DICE
    assert our_containers() == []


@pytest.mark.parametrize("launch", ["cold", "warm"])
def test_cancelling_a_map_run_removes_its_container(phantom_map, held_out, launch):
    with Runner(device="cpu") as runner:
        job = runner.submit(open_package(phantom_map, mode="map", runtime="podman", launch=launch), held_out[2][1])
        deadline = time.monotonic() + 60
        while not our_containers():
            job.poll(block_seconds=0.1)
            assert not job.done, job.error
            assert time.monotonic() < deadline, "the container never started"
        job.cancel()
        with pytest.raises(Cancelled):
            job.wait()
        assert our_containers() == []


@pytest.mark.parametrize(("command", "cause"), [
    (["python3", "-c", "print('segmenting'); raise SystemExit('no lungs found in this phantom')"],
     r"the MAP's app exited with status 1: segmenting \| no lungs found in this phantom$"),
    (["sh", "-c", "for step in 1 2 3; do echo out $step; echo err $step >&2; done; exit 3"],  # not Python
     r"the MAP's app exited with status 3: out 1 \| err 1 \| out 2 \| err 2 \| out 3 \| err 3$"),
    (["python3", "-c", "print('done, but wrote nothing')"],
     r"the app wrote no NIfTI, NRRD or DICOM SEG output \(it wrote nothing\)"),
])
def test_a_failing_map_is_named_and_leaves_no_container(tmp_path, command, cause):
    image = build_map(tmp_path / "context", "localhost/monaideployer-test-failing-map:1",
                      [f"CMD {json.dumps(command)}"])
    with Runner(device="cpu") as runner, pytest.raises(PackageError, match=cause):
        runner.run(open_package(image, mode="map", runtime="podman", launch="cold"),
                   Volume(np.zeros((8, 8, 8), np.float32)))
    assert our_containers() == []


FAILING_APP = """
from monai.deploy.core import Application


class NoLungsApp(Application):
    def compose(self):
        raise RuntimeError("no lungs found in this phantom")


if __name__ == "__main__":
    NoLungsApp().run()
"""


def test_a_warm_map_whose_app_fails_is_named_and_the_container_still_serves(tmp_path, phantom_map):
    context = tmp_path / "context"
    context.mkdir()
    (context / "app.py").write_text(FAILING_APP)
    image = build_map(context, "localhost/monaideployer-test-failing-map:warm",
                      ["COPY app.py /opt/holoscan/app/app.py"], base=SDK_IMAGE, command=["/opt/venv/bin/python3",
                                                                                          "/opt/holoscan/app/app.py"])
    volume = Volume(np.zeros((8, 8, 8), np.float32))
    with Runner(device="cpu") as runner:
        for _ in range(2):  # the same container answers again after a failure
            with pytest.raises(PackageError, match=r"the app failed: .*RuntimeError: no lungs found in this phantom"):
                runner.run(open_package(image, mode="map", runtime="podman"), volume)
            assert len(our_containers()) == 1
    assert our_containers() == []


def test_an_image_that_is_not_a_map_runs_its_own_entry_point_only_when_asked(tmp_path, phantom_map, held_out):
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(f"FROM {phantom_map}\nRUN rm -r /etc/holoscan\n")
    image = "localhost/monaideployer-test-entry-point:1"
    subprocess.run(["podman", "build", "--quiet", "-t", image, str(context)], check=True, capture_output=True)
    _, volume, truth = held_out[0]
    with Runner(device="cpu") as runner:
        with pytest.raises(NotAMapError, match=r"is not a MONAI Application Package: it has no "
                                               r"/etc/holoscan/app\.json; its own entry point can still run, cold"):
            runner.run(open_package(image, mode="map", runtime="podman"), volume)
        result = runner.run(open_package(image, mode="map", runtime="podman", entry_point=True), volume)
    assert result.labels == {1: "label_1", 2: "label_2"}  # no manifest says where a label file would be
    assert min(dice_per_label(result.labelmap.array, truth, [1, 2]).values()) >= MINIMUM_DICE
    assert our_containers() == []


@pytest.fixture(scope="module")
def python_without_torch(tmp_path_factory) -> str:
    """A worker Python with the library's own dependencies and no torch or MONAI: a user with only a container
    runtime, as the MAP's whole point is (the versions of this environment's, so pip finds them cached)."""
    from importlib.metadata import version

    folder = tmp_path_factory.mktemp("no-torch") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, capture_output=True)
    python = str(folder / "bin" / "python")
    wanted = [f"{name}=={version(name)}" for name in ("numpy", "nibabel", "pynrrd", "packaging", "PyYAML")]
    subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", *wanted], check=True,
                   capture_output=True)
    assert subprocess.run([python, "-c", "import torch"], capture_output=True, check=False).returncode != 0
    return python


@pytest.fixture(scope="module")
def numpy_map(tmp_path_factory) -> str:
    """A MAP whose app is a numpy script (no MONAI Deploy app, no torch in the image)."""
    context = tmp_path_factory.mktemp("numpy-map")
    shutil.copy(THRESHOLD_APP / "app.py", context / "app.py")
    return build_map(context, "localhost/monaideployer-test-numpy-map:1",
                     ["COPY app.py /opt/holoscan/app/app.py", 'ENTRYPOINT ["python3", "/opt/holoscan/app/app.py"]'])


def test_a_map_without_torch_runs_by_default_through_a_worker_without_torch(numpy_map, python_without_torch,
                                                                           held_out):
    """Warm is the default; an app that is not a Deploy app runs cold instead, and the first result says why."""
    with Runner(python=python_without_torch, device="cpu") as runner:
        assert "torch" not in runner.environment()["packages"]
        package = open_package(numpy_map, mode="map", runtime="podman")
        results = [runner.run(package, volume) for _, volume, _ in held_out]
    for result, (_, volume, truth) in zip(results, held_out, strict=True):
        assert result.labelmap.same_grid(volume, tolerance=1e-9)
        assert min(dice_per_label(result.labelmap.array, truth, [1, 2]).values()) >= MINIMUM_DICE
        assert "import" not in result.timings and "container" in result.timings
    assert results[0].notes == ["localhost/monaideployer-test-numpy-map:1 ran cold, in a container per run: "
                                "/opt/holoscan/app/app.py cannot be kept warm: app.py defines no MONAI Deploy "
                                "Application class"]
    assert results[1].notes == results[2].notes == []  # said once
    assert our_containers() == []


def test_the_cli_without_torch_runs_a_map_and_says_why_it_ran_cold(numpy_map, python_without_torch, held_out,
                                                                   tmp_path):
    from MonaiDeployerLib import read_volume, write_volume

    _, volume, truth = held_out[1]
    write_volume(str(tmp_path / "case.nii.gz"), volume)
    finished = subprocess.run([python_without_torch, "-m", "MonaiDeployerLib", "run", numpy_map,
                               str(tmp_path / "case.nii.gz"), str(tmp_path / "seg.nii.gz"), "--mode", "map",
                               "--device", "cpu"],
                              capture_output=True, text=True, cwd=REPO_ROOT / "MonaiDeployer", check=False)
    assert finished.returncode == 0, finished.stderr
    assert finished.stderr.count("note: ") == 1
    assert "ran cold, in a container per run: " in finished.stderr
    assert min(dice_per_label(read_volume(str(tmp_path / "seg.nii.gz")).array, truth, [1, 2]).values()) >= MINIMUM_DICE
    assert our_containers() == []


def test_a_map_whose_command_is_not_python_runs_cold_and_says_why(tmp_path, held_out):
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(THRESHOLD_APP / "app.py", context / "app.py")
    command = ["sh", "-c", "exec python3 /opt/holoscan/app/app.py"]
    image = build_map(context, "localhost/monaideployer-test-numpy-map:shell",
                      ["COPY app.py /opt/holoscan/app/app.py", f"ENTRYPOINT {json.dumps(command)}"], command=command)
    _, volume, truth = held_out[0]
    with Runner(device="cpu") as runner:
        result = runner.run(open_package(image, mode="map", runtime="podman"), volume)
    assert result.notes == [f"{image} ran cold, in a container per run: it runs sh -c exec python3 "
                            "/opt/holoscan/app/app.py, not a Python app"]
    assert min(dice_per_label(result.labelmap.array, truth, [1, 2]).values()) >= MINIMUM_DICE
    assert our_containers() == []


@pytest.mark.parametrize("launch", ["cold", "warm"])
def test_a_killed_command_line_leaves_no_container_process_or_file(phantom_map, held_out, tmp_path, launch):
    """SIGKILL of the command line while its MAP's container runs: the worker removes the container and the
    runner's folder, and every process of the run ends."""
    import psutil

    from MonaiDeployerLib import write_volume

    case, output = tmp_path / "case.nii.gz", tmp_path / "out" / "seg.nii.gz"
    output.parent.mkdir()
    write_volume(str(case), held_out[0][1])
    cli = subprocess.Popen([sys.executable, "-m", "MonaiDeployerLib", "run", phantom_map, str(case), str(output),
                            "--mode", "map", "--runtime", "podman", "--device", "cpu",
                            *(["--cold"] if launch == "cold" else [])],
                           cwd=REPO_ROOT / "MonaiDeployer", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    role = "-run" if launch == "cold" else "-warm-1"  # not the container the manifests are read from
    try:
        deadline = time.monotonic() + 120
        while not [name for name in running_containers() if name.endswith(role)]:
            assert cli.poll() is None and time.monotonic() < deadline, "the container never started"
            time.sleep(0.05)
        worker = psutil.Process(cli.pid).children()[0]
        processes = [worker, *worker.children(recursive=True)]
        folder = next(path.parent for path in LIBRARY_TEMP.glob("monaideployer-*/owner.json")
                      if json.loads(path.read_text())["pid"] == cli.pid)
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=10)
        _, alive = psutil.wait_procs(processes, timeout=60)
        assert alive == []
    finally:
        cli.kill()
    deadline = time.monotonic() + 60  # a cleaner removes them once every process of the run has ended
    while (folder.exists() or our_containers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert our_containers() == []
    assert not folder.exists()
    assert list(output.parent.iterdir()) == []
