"""MAP mode: a MONAI Application Package run in docker or podman as the MAP specification says.

Input and output folders are mounted at the manifest's paths, with the ``HOLOSCAN_*`` variables;
the container runs as the caller (outputs are not root-owned), with no network, no capabilities
and no new privileges, and is removed after the run, after a failure and after a cancel (the
client removes it by name when it kills the worker).
"""

from __future__ import annotations

import os
import subprocess
import time

from ..containers import find_runtime
from ..errors import PackageError
from ..maps import inspect_map
from ..volume import write_volume
from . import Segmented
from .deploy import segmented_outputs, traceback_tail

APP_LOG = "map.log"
CONTAINER_PREFIX = "monaideployer-"


def container_names(work_folder: str) -> tuple:
    """The containers a run may create (reading the manifests, running the app), named after its private folder
    so that a cancel can remove them."""
    name = CONTAINER_PREFIX + os.path.basename(os.path.normpath(work_folder))
    return f"{name}-inspect", name


class MapBackend:
    def __init__(self):
        self._facts = {}

    def run(self, package, volume, device: str, report, work_folder: str) -> Segmented:
        timings = {}
        runtime = find_runtime(package.settings.get("runtime"))
        key = (runtime, package.path)
        if key not in self._facts:
            started = time.perf_counter()
            self._facts[key] = inspect_map(runtime, package.path, container_names(work_folder)[0], work_folder)
            timings["inspect_image"] = time.perf_counter() - started
        facts = self._facts[key]
        input_folder, output_folder = os.path.join(work_folder, "map-input"), os.path.join(work_folder, "map-output")
        os.makedirs(input_folder)
        os.makedirs(output_folder)
        started = time.perf_counter()
        write_volume(os.path.join(input_folder, "input.nii.gz"), volume)
        timings["write_app_input"] = time.perf_counter() - started

        report("inference", None)
        started = time.perf_counter()
        _run_container(runtime, facts, input_folder, output_folder, container_names(work_folder)[1],
                       os.path.join(work_folder, APP_LOG))
        timings["container"] = time.perf_counter() - started
        return segmented_outputs(output_folder, volume, package, timings, report)


def _run_container(runtime: str, facts, input_folder: str, output_folder: str, name: str, log_path: str) -> None:
    command = [runtime, "run", "--rm", "--name", name, "--network", "none", "--cap-drop", "all",
               "--security-opt", "no-new-privileges", "--user", f"{os.getuid()}:{os.getgid()}",
               "-v", f"{input_folder}:{facts.input_path}:ro", "-v", f"{output_folder}:{facts.output_path}",
               "-e", f"HOLOSCAN_INPUT_PATH={facts.input_path}", "-e", f"HOLOSCAN_OUTPUT_PATH={facts.output_path}"]
    shared_memory = _size_for_runtime(facts.resources.get("sharedMemory"))
    if shared_memory:
        command += ["--shm-size", shared_memory]
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            finished = subprocess.run([*command, facts.reference], stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, check=False)
    finally:
        remove_container(runtime, name)
    if finished.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            lines = [line.rstrip() for line in log if line.strip()]
        raise PackageError(f"the MAP's app exited with status {finished.returncode}: "
                           + " | ".join(traceback_tail(lines)))


def remove_container(runtime: str, *names: str) -> None:
    """Remove a run's containers if they are still there (after a failure or a cancel); quiet if they are gone."""
    subprocess.run([runtime, "rm", "--force", "--ignore", *names], capture_output=True, check=False, timeout=60)


def _size_for_runtime(size) -> str:
    """Kubernetes-style sizes of the manifest ("1Gi", "512Mi") as docker/podman sizes ("1g", "512m")."""
    if not size:
        return ""
    text = str(size).strip()
    for suffix, unit in (("Gi", "g"), ("Mi", "m"), ("Ki", "k"), ("G", "g"), ("M", "m")):
        if text.endswith(suffix):
            return text[: -len(suffix)] + unit
    return text
