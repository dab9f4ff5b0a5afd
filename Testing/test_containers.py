"""MAP groundwork: finding a container runtime that answers, and the CUDA verdict given before a run.

No NVIDIA GPU and no CUDA image can be reached here: the ``nvidia-smi`` and ``image inspect``
outputs in ``Testing/data`` are written in those tools' formats (an H100 with driver 570, a T4
with driver 525, a CUDA 12.4 runtime image, a Debian Python image), not recorded on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from MonaiDeployerLib import PackageError
from MonaiDeployerLib.containers import cuda_verdict, find_runtime, image_cuda, parse_nvidia_smi

DATA = Path(__file__).parent / "data"


def environment_of(name: str) -> list:
    return json.loads((DATA / name).read_text())[0]["Config"]["Env"]


def test_nvidia_smi_gives_the_driver_the_cuda_it_supports_and_the_gpus():
    h100 = parse_nvidia_smi((DATA / "nvidia-smi-h100.txt").read_text())
    assert (h100.driver, h100.cuda, h100.names) == ("570.86.15", (12, 8), ["NVIDIA H100 80GB HBM3"])
    t4 = parse_nvidia_smi((DATA / "nvidia-smi-old-driver.txt").read_text())
    assert (t4.driver, t4.cuda, t4.names) == ("525.147.05", (12, 0), ["Tesla T4"])


@pytest.mark.parametrize("output", [None, "", "NVIDIA-SMI has failed because it couldn't communicate with the "
                                                "NVIDIA driver. Make sure that the latest NVIDIA driver is installed."])
def test_no_nvidia_smi_or_a_failing_one_means_no_gpu(output):
    assert parse_nvidia_smi(output) is None


def test_an_images_cuda_comes_from_its_environment():
    assert image_cuda(environment_of("image-inspect-cuda-12.4.json")) == (12, 4)
    assert image_cuda(environment_of("image-inspect-debian-python.json")) is None
    assert image_cuda({"CUDA_VERSION": "11.8.0"}) == (11, 8)


def test_the_verdict_for_each_case():
    needs_12_4 = image_cuda(environment_of("image-inspect-cuda-12.4.json"))
    h100 = parse_nvidia_smi((DATA / "nvidia-smi-h100.txt").read_text())
    t4 = parse_nvidia_smi((DATA / "nvidia-smi-old-driver.txt").read_text())

    assert cuda_verdict(None, h100).kind == "cpu"
    assert cuda_verdict(None, h100).text == "runs on the CPU only: the image has no CUDA"
    no_gpu = cuda_verdict(needs_12_4, None)
    assert (no_gpu.kind, no_gpu.text) == ("cpu", "runs on the CPU only: the image is built for CUDA 12.4, and this "
                                                 "computer has no NVIDIA GPU (or its driver does not answer)")
    fits = cuda_verdict(needs_12_4, h100)
    assert (fits.kind, fits.text) == ("gpu", "runs on the GPU: the image needs CUDA 12.4; driver 570.86.15 supports "
                                             "up to CUDA 12.8")
    too_old = cuda_verdict(needs_12_4, t4)
    assert too_old.kind == "fail"
    assert too_old.text == ("will fail on the GPU: the image needs CUDA 12.4 but driver 525.147.05 supports only up "
                            "to CUDA 12.0; update the NVIDIA driver to 550.54.14 or newer, use an image built for "
                            "CUDA 12.0 or older, or run on the CPU (device cpu)")
    assert cuda_verdict(needs_12_4, t4, gpu_requested=False).kind == "cpu"


def test_an_unknown_runtime_is_refused():
    with pytest.raises(PackageError, match=r"unknown container runtime 'lxc' \(use podman or docker\)"):
        find_runtime("lxc")


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client on this machine")
def test_a_docker_client_without_a_daemon_is_not_a_runtime(tmp_path, monkeypatch):
    """The real docker client, alone on PATH, with no daemon behind it (as on this machine)."""
    (tmp_path / "docker").symlink_to(shutil.which("docker"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    with pytest.raises(PackageError) as refused:
        find_runtime()
    message = str(refused.value)
    assert message.startswith("no container runtime to run a MAP (install podman, or start docker's daemon): "
                              f"podman is not installed; docker ({tmp_path}{os.sep}docker) does not answer: ")
    assert "\n" not in message
