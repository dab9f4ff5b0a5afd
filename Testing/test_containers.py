"""MAP groundwork: finding a container runtime that answers, and the CUDA verdict given before a run.

No NVIDIA GPU and no CUDA image can be reached here: the verdict is tested on published
recordings of ``nvidia-smi`` and ``image inspect`` (``Testing/data/SOURCES.md`` names each source)
and on an inspect recorded here of the phantom MAP.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from MonaiDeployerLib import PackageError
from MonaiDeployerLib.environment.containers import (
    HostGpus,
    cuda_verdict,
    find_runtime,
    forward_compatible_drivers,
    image_cuda,
    parse_nvidia_smi,
)

DATA = Path(__file__).parent / "data"
VLLM_ENVIRONMENT = json.loads((DATA / "image-env-vllm-openai-0.8.5.json").read_text())
PHANTOM_MAP_ENVIRONMENT = json.loads((DATA / "image-inspect-phantom-map.json").read_text())[0]["Config"]["Env"]


def recorded_gpus(name: str) -> HostGpus | None:
    return parse_nvidia_smi((DATA / name).read_text())


def test_nvidia_smi_gives_the_driver_the_cuda_it_supports_and_the_gpus():
    a10 = recorded_gpus("nvidia-smi-a10-driver-550.txt")
    assert (a10.driver, a10.cuda, a10.names) == ("550.127.05", (12, 4), ["NVIDIA A10"])
    h100 = recorded_gpus("nvidia-smi-h100-driver-535.txt")
    assert (h100.driver, h100.cuda, h100.names) == ("535.129.03", (12, 2), ["NVIDIA H100 80GB HBM3"] * 8)
    gtx = recorded_gpus("nvidia-smi-gtx1070-driver-418.txt")
    assert (gtx.driver, gtx.cuda, gtx.names) == ("418.87.01", (10, 1), ["GeForce GTX 1070"])


@pytest.mark.parametrize("output", [None, "", (DATA / "nvidia-smi-failed.txt").read_text()])
def test_no_nvidia_smi_or_a_failing_one_means_no_gpu(output):
    assert parse_nvidia_smi(output) is None


def test_an_images_cuda_comes_from_its_environment():
    assert image_cuda(VLLM_ENVIRONMENT) == (12, 4)
    assert forward_compatible_drivers(VLLM_ENVIRONMENT) == [("470", "471"), ("525", "526"), ("535", "536")]
    assert image_cuda(PHANTOM_MAP_ENVIRONMENT) is None
    assert forward_compatible_drivers(PHANTOM_MAP_ENVIRONMENT) == []
    assert image_cuda({"CUDA_VERSION": "11.8.0"}) == (11, 8)


def test_the_verdict_for_each_case():
    needs, accepts = image_cuda(VLLM_ENVIRONMENT), forward_compatible_drivers(VLLM_ENVIRONMENT)
    a10 = recorded_gpus("nvidia-smi-a10-driver-550.txt")

    no_cuda = cuda_verdict(image_cuda(PHANTOM_MAP_ENVIRONMENT), a10)
    assert (no_cuda.kind, no_cuda.text) == ("cpu", "runs on the CPU only: the image has no CUDA")
    no_gpu = cuda_verdict(needs, recorded_gpus("nvidia-smi-failed.txt"), compatible_drivers=accepts)
    assert (no_gpu.kind, no_gpu.text) == ("cpu", "runs on the CPU only: the image is built for CUDA 12.4, and this "
                                                 "computer has no NVIDIA GPU (or its driver does not answer)")
    fits = cuda_verdict(needs, a10, compatible_drivers=accepts)
    assert (fits.kind, fits.text) == ("gpu", "runs on the GPU: the image needs CUDA 12.4; driver 550.127.05 supports "
                                             "up to CUDA 12.4")
    too_old = cuda_verdict(needs, recorded_gpus("nvidia-smi-gtx1070-driver-418.txt"), compatible_drivers=accepts)
    assert (too_old.kind, too_old.text) == (
        "fail", "will fail on the GPU: the image needs CUDA 12.4 but driver 418.87.01 supports only up to CUDA 10.1; "
                "update the NVIDIA driver to 550.54.14 or newer, use an image built for CUDA 10.1 or older, "
                "or run on the CPU (device cpu)")
    assert cuda_verdict(needs, a10, gpu_requested=False).kind == "cpu"


def test_an_older_driver_branch_the_image_accepts_runs_through_forward_compatibility():
    needs, accepts = image_cuda(VLLM_ENVIRONMENT), forward_compatible_drivers(VLLM_ENVIRONMENT)
    h100 = recorded_gpus("nvidia-smi-h100-driver-535.txt")
    compatible = cuda_verdict(needs, h100, compatible_drivers=accepts)
    assert (compatible.kind, compatible.text) == (
        "gpu", "runs on the GPU through CUDA forward compatibility: the image needs CUDA 12.4, driver 535.129.03 "
               "supports up to CUDA 12.2, and the image accepts drivers >= 535 and < 536 (data-centre GPUs only)")
    assert cuda_verdict(needs, h100).kind == "fail"  # an image that names no older branch
    # Written, not recorded: the same driver on a GeForce card, where forward compatibility does not work.
    geforce = HostGpus("535.129.03", (12, 2), ["NVIDIA GeForce RTX 3090"])
    refused = cuda_verdict(needs, geforce, compatible_drivers=accepts)
    assert (refused.kind, refused.text) == (
        "fail", "will fail on the GPU: the image needs CUDA 12.4 but driver 535.129.03 supports only up to CUDA 12.2, "
                "and the forward compatibility the image allows for this driver works on data-centre GPUs, not on "
                "NVIDIA GeForce RTX 3090; update the NVIDIA driver to 550.54.14 or newer, or run on the CPU "
                "(device cpu)")


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


def recorded_map_facts(environment: list):
    """What inspect_map gives for an image with this (recorded) environment."""
    from MonaiDeployerLib.packages.map_image import MapFacts

    environment = dict(entry.split("=", 1) for entry in environment)
    return MapFacts("registry.example/segmenter:1", "sha256:0", "segmenter", "1", "/var/holoscan/input",
                    "/var/holoscan/output", [], [], {"gpu": 1}, environment, image_cuda(environment),
                    compatible_drivers=forward_compatible_drivers(environment))


def test_gpu_flags_are_passed_only_when_asked_for_and_usable():
    from MonaiDeployerLib.inference.backends.map import gpu_options

    cuda_image = recorded_map_facts(VLLM_ENVIRONMENT)
    a10 = recorded_gpus("nvidia-smi-a10-driver-550.txt")
    assert gpu_options("/usr/bin/podman", "auto", cuda_image, a10) == ["--device", "nvidia.com/gpu=all"]
    assert gpu_options("/usr/bin/docker", "cuda", cuda_image, a10) == ["--gpus", "all"]
    assert gpu_options("/usr/bin/podman", "cpu", cuda_image, a10) == []
    assert gpu_options("/usr/bin/podman", "auto", recorded_map_facts(PHANTOM_MAP_ENVIRONMENT), a10) == []

    too_old = recorded_gpus("nvidia-smi-gtx1070-driver-418.txt")
    assert gpu_options("/usr/bin/podman", "auto", cuda_image, too_old) == []  # auto runs it on the CPU
    with pytest.raises(PackageError, match=r"registry\.example/segmenter:1 cannot use a GPU here: will fail on the "
                                           r"GPU: the image needs CUDA 12\.4 but driver 418\.87\.01 supports only"):
        gpu_options("/usr/bin/podman", "cuda", cuda_image, too_old)
