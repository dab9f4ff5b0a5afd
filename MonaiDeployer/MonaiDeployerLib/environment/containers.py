"""Container runtimes and GPUs, for MAPs: which runtime answers, and whether an image's CUDA can run here.

A runtime is found only when it answers (``docker info`` fails when the docker client has no
daemon behind it). The CUDA verdict compares what an image declares in its environment
(``CUDA_VERSION``, ``NVIDIA_REQUIRE_CUDA``) with the highest CUDA the host's NVIDIA driver
supports (the "CUDA Version" in ``nvidia-smi``'s header), before anything runs. As the NVIDIA
container toolkit reads ``NVIDIA_REQUIRE_CUDA``, space-separated alternatives are ORed: besides
``cuda>=12.4``, ``brand=tesla,driver>=535,driver<536`` accepts an older driver branch through
CUDA forward compatibility (the image's ``cuda-compat`` libraries), which works on data-centre
GPUs only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from ..errors import PackageError

RUNTIMES = ("podman", "docker")
ANSWER_SECONDS = 15
# The oldest Linux driver of each CUDA release (NVIDIA's CUDA toolkit release notes, table 3).
MINIMUM_DRIVER = {(11, 0): "450.51.05", (11, 8): "520.61.05", (12, 0): "525.60.13", (12, 2): "535.54.03",
                  (12, 4): "550.54.14", (12, 6): "560.28.03", (12, 8): "570.26", (13, 0): "580.65.06"}


def find_runtime(choice: str | None = None) -> str:
    """The path of a container runtime that answers: ``choice`` ("docker" or "podman"), else the first that does.

    One that answered is remembered for this process (asking costs a few hundred milliseconds per run).
    """
    check_runtime_choice(choice)
    return _answering_runtime(choice, os.environ.get("PATH", ""), os.environ.get("DOCKER_HOST", ""))


def check_runtime_choice(choice: str | None) -> None:
    if choice not in (None, *RUNTIMES):
        raise PackageError(f"unknown container runtime {choice!r} (use {' or '.join(RUNTIMES)})")


@functools.cache
def _answering_runtime(choice: str | None, search_path: str, docker_host: str) -> str:
    """Cached by what decides the answer; a runtime that did not answer raises, so it is asked again next time."""
    reasons = []
    for name in (choice,) if choice else RUNTIMES:
        path = shutil.which(name, path=search_path)
        if path is None:
            reasons.append(f"{name} is not installed")
            continue
        problem = _does_not_answer(path)
        if problem is None:
            return path
        reasons.append(f"{name} ({path}) does not answer: {problem}")
    raise PackageError("no container runtime to run a MAP (install podman, or start docker's daemon): "
                       + "; ".join(reasons))


def _does_not_answer(path: str) -> str | None:
    try:
        finished = subprocess.run([path, "info"], capture_output=True, text=True, timeout=ANSWER_SECONDS,
                                  stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return f"no answer within {ANSWER_SECONDS} s"
    except OSError as error:
        return error.strerror
    if finished.returncode == 0:
        return None
    lines = [line.strip() for line in (finished.stderr or finished.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {finished.returncode}"


def container_name(private_folder: str, role: str) -> str:
    """A container named after the runner's private folder (``monaideployer-…``), so the runner finds all it made."""
    return f"{os.path.basename(os.path.normpath(private_folder))}-{role}"


def remove_containers_of(runtime: str, private_folder: str) -> None:
    """Remove every container named after a runner's private folder, running or not (after a cancel or a failure)."""
    prefix = container_name(private_folder, "")
    try:
        listed = subprocess.run([runtime, "ps", "-a", "--filter", f"name={prefix}", "--format", "{{.Names}}"],
                                capture_output=True, text=True, timeout=ANSWER_SECONDS * 4, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return  # the runtime is gone or hangs: nothing more can be done from here
    remove_containers(runtime, *[name for name in listed.stdout.split() if name.startswith(prefix)])


def remove_containers(runtime: str, *names: str) -> None:
    """Remove containers by name, running or not; quiet for those already gone."""
    if not names:
        return
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run([runtime, "rm", "--force", *names], capture_output=True, timeout=ANSWER_SECONDS * 4,
                       check=False)


@dataclass
class HostGpus:
    """What ``nvidia-smi`` says: the driver, the highest CUDA it supports, the GPUs."""

    driver: str
    cuda: tuple
    names: list


def parse_nvidia_smi(text: str | None) -> HostGpus | None:
    """The GPUs in ``nvidia-smi``'s output, or None when there is no NVIDIA GPU (no tool, or it failed)."""
    if not text:
        return None
    driver = re.search(r"Driver Version:\s*([\d.]+)", text)
    cuda = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", text)
    if not driver or not cuda:
        return None
    names = re.findall(r"^\|\s+\d+\s+(.+?)\s{2,}(?:On|Off)\s+\|", text, re.MULTILINE)
    return HostGpus(driver.group(1), (int(cuda.group(1)), int(cuda.group(2))), names)


def read_host_gpus() -> HostGpus | None:
    """This computer's NVIDIA GPUs, or None."""
    path = shutil.which("nvidia-smi")
    if path is None:
        return None
    try:
        finished = subprocess.run([path], capture_output=True, text=True, timeout=ANSWER_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvidia_smi(finished.stdout) if finished.returncode == 0 else None


def _as_dict(environment: list | dict) -> dict:
    if isinstance(environment, list):
        return dict(entry.split("=", 1) for entry in environment if "=" in entry)
    return environment


def image_cuda(environment: list | dict) -> tuple | None:
    """The CUDA (major, minor) an image is built for, from its environment, or None for an image without CUDA."""
    environment = _as_dict(environment)
    required = re.search(r"cuda>=(\d+)\.(\d+)", environment.get("NVIDIA_REQUIRE_CUDA", ""))
    if required:
        return int(required.group(1)), int(required.group(2))
    version = re.match(r"(\d+)\.(\d+)", environment.get("CUDA_VERSION", ""))
    return (int(version.group(1)), int(version.group(2))) if version else None


def forward_compatible_drivers(environment: list | dict) -> list:
    """The older driver ranges ``NVIDIA_REQUIRE_CUDA`` accepts besides its CUDA version, as (lowest, below) pairs:
    ``brand=tesla,driver>=535,driver<536`` gives ("535", "536"), once whatever the brands."""
    ranges = []
    for alternative in _as_dict(environment).get("NVIDIA_REQUIRE_CUDA", "").split():
        lowest = re.search(r"driver>=([\d.]+)", alternative)
        below = re.search(r"driver<([\d.]+)", alternative)
        if lowest and below and (lowest.group(1), below.group(1)) not in ranges:
            ranges.append((lowest.group(1), below.group(1)))
    return ranges


@dataclass
class Verdict:
    """Before a run: "gpu" (runs on the GPU), "cpu" (runs on the CPU only) or "fail", and why, with the fix."""

    kind: str
    text: str


def cuda_verdict(needed: tuple | None, host: HostGpus | None, gpu_requested: bool = True,
                 compatible_drivers: list = ()) -> Verdict:
    """Whether an image built for CUDA ``needed`` can use this host's GPUs; ``compatible_drivers`` are the driver
    ranges it accepts through forward compatibility (``forward_compatible_drivers``)."""
    if needed is None:
        return Verdict("cpu", "runs on the CPU only: the image has no CUDA")
    wanted = f"{needed[0]}.{needed[1]}"
    if host is None:
        return Verdict("cpu", f"runs on the CPU only: the image is built for CUDA {wanted}, "
                              "and this computer has no NVIDIA GPU (or its driver does not answer)")
    if not gpu_requested:
        return Verdict("cpu", "runs on the CPU only, as asked (device cpu)")
    supported = f"{host.cuda[0]}.{host.cuda[1]}"
    if host.cuda >= needed:
        return Verdict("gpu", f"runs on the GPU: the image needs CUDA {wanted}; driver {host.driver} "
                              f"supports up to CUDA {supported}")
    accepted = [(lowest, below) for lowest, below in compatible_drivers
                if _version(lowest) <= _version(host.driver) < _version(below)]
    consumer = [name for name in host.names if "GEFORCE" in name.upper() or "TITAN" in name.upper()]
    if accepted and not consumer:
        return Verdict("gpu", f"runs on the GPU through CUDA forward compatibility: the image needs CUDA {wanted}, "
                              f"driver {host.driver} supports up to CUDA {supported}, and the image accepts drivers "
                              f">= {accepted[0][0]} and < {accepted[0][1]} (data-centre GPUs only)")
    driver = _minimum_driver(needed)
    if accepted:
        return Verdict("fail", f"will fail on the GPU: the image needs CUDA {wanted} but driver {host.driver} supports "
                               f"only up to CUDA {supported}, and the forward compatibility the image allows for this "
                               f"driver works on data-centre GPUs, not on {consumer[0]}; update the NVIDIA driver"
                               f"{f' to {driver} or newer' if driver else ''}, or run on the CPU (device cpu)")
    fix = f"update the NVIDIA driver{f' to {driver} or newer' if driver else ''}, use an image built for " \
          f"CUDA {supported} or older, or run on the CPU (device cpu)"
    return Verdict("fail", f"will fail on the GPU: the image needs CUDA {wanted} but driver {host.driver} "
                           f"supports only up to CUDA {supported}; {fix}")


def _version(text: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def _minimum_driver(needed: tuple) -> str:
    known = [release for release in MINIMUM_DRIVER if release <= needed]
    return MINIMUM_DRIVER[max(known)] if known else ""
