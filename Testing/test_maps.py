"""MAP images inspected before they run, with real podman: labels, manifests, resources, CUDA verdict.

The images are built here from the Debian base image ``Testing/setup_containers.sh`` makes; the
tests skip where podman cannot run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO_ROOT, assert_held_out_segmented

from MonaiDeployerLib import Cancelled, PackageError, Runner, Volume, open_package
from MonaiDeployerLib.maps import inspect_map
from MonaiDeployerLib.selftest import SAMPLE_MODEL

BASE_IMAGE = "localhost/monaideployer-test-base:bookworm"
SDK_IMAGE = "localhost/monaideployer-test-sdk:cpu"
TEST_MAP = "localhost/monaideployer-test-map:1.0"
PHANTOM_MAP = "localhost/monaideployer-phantom-map:1.0"
NIFTI_APP = REPO_ROOT / "Testing" / "deploy_apps" / "phantom_nifti"
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


def build_map(context, tag: str, lines: list) -> str:
    """An image of the test base image with both MAP manifests and the Containerfile ``lines`` after them."""
    context.mkdir(parents=True, exist_ok=True)
    (context / "app.json").write_text(json.dumps(APP_MANIFEST))
    (context / "pkg.json").write_text(json.dumps(PACKAGE_MANIFEST))
    (context / "Containerfile").write_text("\n".join([f"FROM {BASE_IMAGE}", "COPY app.json pkg.json /etc/holoscan/",
                                                      *lines]) + "\n")
    subprocess.run(["podman", "build", "--quiet", "-t", tag, "-f", str(context / "Containerfile"), str(context)],
                   check=True, capture_output=True)
    return tag


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


@pytest.fixture(scope="module")
def phantom_map() -> str:
    """The phantom NIfTI Deploy app packaged by ``package`` on the SDK base image (Debian, venv with torch CPU)."""
    finished = subprocess.run([sys.executable, "-m", "MonaiDeployerLib", "package", str(NIFTI_APP), "--base", SDK_IMAGE,
                               "--tag", PHANTOM_MAP, "--runtime", "podman", "--model", SAMPLE_MODEL,
                               "--python", "/opt/venv/bin/python"],
                              capture_output=True, text=True, cwd=REPO_ROOT / "MonaiDeployer", check=False)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == f"built {PHANTOM_MAP}"
    return PHANTOM_MAP


def test_a_packaged_app_is_a_map(phantom_map):
    facts = inspect_map("podman", phantom_map)
    assert (facts.title, facts.version) == ("Phantom organ and lesion (MONAI Deploy app, NIfTI)", "1.0.0")
    assert (facts.input_path, facts.output_path, facts.input_formats) == ("/var/holoscan/input",
                                                                          "/var/holoscan/output", ["nifti"])
    assert facts.resources == {"cpu": 1, "gpu": 0, "memory": "2Gi"}
    assert facts.environment["HOLOSCAN_MODEL_PATH"] == "/opt/holoscan/models/PhantomUNet.ts"


def test_the_map_segments_held_out_volumes_in_a_hardened_container(phantom_map, held_out):
    with Runner(device="cpu") as runner:
        assert_held_out_segmented(runner, open_package(phantom_map, mode="map", runtime="podman"), held_out,
                                  {1: "label_1", 2: "label_2"}, "map")
    assert our_containers() == []


def test_cli_and_mrml_logic_run_the_map(phantom_map, held_out, tmp_path, scene):
    from MonaiDeployerLib import read_volume, sampledata, write_volume
    from MonaiDeployerLib.noderun import NodeSegmentation
    from MonaiDeployerLib.selftest import MINIMUM_DICE, dice_per_label, held_out_node, node_array

    _, volume, truth = held_out[1]
    source, output = tmp_path / "case.nii.gz", tmp_path / "seg.nii.gz"
    write_volume(source, volume)
    finished = subprocess.run([sys.executable, "-m", "MonaiDeployerLib", "run", phantom_map, str(source), str(output),
                               "--runtime", "podman"], capture_output=True, text=True, cwd=REPO_ROOT / "MonaiDeployer",
                              check=False)
    assert finished.returncode == 0, finished.stderr
    assert min(dice_per_label(read_volume(output).array, truth, [1, 2]).values()) >= MINIMUM_DICE

    node, truth = held_out_node(scene, sampledata.held_out_cases()[2])
    with Runner(device="cpu") as runner:
        output_node = NodeSegmentation(runner, open_package(phantom_map, mode="map", runtime="podman"), node).wait()
    assert min(dice_per_label(node_array(output_node), truth, [1, 2]).values()) >= MINIMUM_DICE
    assert our_containers() == []


def test_cancelling_a_map_run_removes_its_container(phantom_map, held_out):
    with Runner(device="cpu") as runner:
        job = runner.submit(open_package(phantom_map, mode="map", runtime="podman"), held_out[2][1])
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
     r"the MAP's app exited with status 1: segmenting \| no lungs found in this phantom"),
    (["python3", "-c", "print('done, but wrote nothing')"],
     r"the app wrote no NIfTI, NRRD or DICOM SEG output \(it wrote nothing\)"),
])
def test_a_failing_map_is_named_and_leaves_no_container(tmp_path, command, cause):
    image = build_map(tmp_path / "context", "localhost/monaideployer-test-failing-map:1",
                      [f"CMD {json.dumps(command)}"])
    with Runner(device="cpu") as runner, pytest.raises(PackageError, match=cause):
        runner.run(open_package(image, mode="map", runtime="podman"), Volume(np.zeros((8, 8, 8), np.float32)))
    assert our_containers() == []
