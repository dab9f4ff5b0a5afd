"""MAP mode: a MONAI Application Package run in docker or podman as the MAP specification says.

Every container runs as the caller (outputs are not root-owned), with no network, no capabilities
and no new privileges, GPUs only when asked for and usable, and is named after the runner's
private folder so that a cancel finds and removes it.

Cold: one container per prediction, the input and output folders mounted at the manifest's
paths, with the ``HOLOSCAN_*`` variables; removed after the run or a failure.
Warm (the default): one long-lived container of the image runs MonaiDeployer's worker request
loop in the image's own Python (this package mounted read-only, the runner's private folder
mounted at the same path), which imports the MAP's Deploy app once and re-runs it per request,
as Deploy mode's warm launch does. It stops when the worker closes, or is removed by the runner.
The worker needs only numpy there. An image that cannot host it (an app that is not a Deploy app
in Python, a Python that cannot run the worker) runs cold instead, and the result says why once.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from ...environment.containers import container_name, find_runtime, read_host_gpus, remove_containers
from ...errors import CannotKeepWarm, PackageError, WorkerError
from ...imageio.dicom import DICOM_SOURCE_FOLDER, write_dicom_series
from ...imageio.volume import write_volume
from ...packages.deployapp import DeployKind, DeploySettings
from ...packages.map_image import image_description, inspect_map
from ...transport.client import LIBRARY_PARENT, WorkerClient
from . import Segmented
from .deploy import segmented_outputs, traceback_tail

APP_LOG = "map.log"
PYTHON_OPTIONS_WITH_VALUE = ("-W", "-X")
# What the worker in a warm container writes the app's input and reads its output with (the host does it cold).
WARM_FILE_PACKAGES = {"nifti": ("nibabel",), "dicom": ("pydicom", "highdicom")}
LIBRARY_MOUNT = "/opt/monaideployer"


class MapBackend:

    def __init__(self):
        self._facts = {}  # (runtime, reference, entry point) -> MapFacts of the image the reference named last
        self._warm = {}  # (runtime, image id) -> (WorkerClient, container name)
        self._cold_because = {}  # (runtime, image id) -> why that image cannot be kept warm
        self._host_gpus = read_host_gpus()

    def run(self, package, volume, device: str, report, work_folder: str) -> Segmented:
        timings = {}
        runtime = find_runtime(package.settings.runtime)
        private_folder = os.path.dirname(work_folder)
        started = time.perf_counter()
        facts = self._inspected(runtime, package.path, private_folder, work_folder,
                                package.settings.entry_point)
        timings["inspect_image"] = time.perf_counter() - started
        options = [*hardened_options(facts), *gpu_options(runtime, device, facts, self._host_gpus)]
        input_format = package.settings.input_format or ("dicom" if facts.reads_dicom else "nifti")
        _copy_linked_series(os.path.join(work_folder, DICOM_SOURCE_FOLDER))
        described = dataclasses.replace(package, name=facts.title, labels=package.labels or facts.labels)
        cold = (runtime, facts, options, described, volume, input_format, report, work_folder, timings)
        if package.settings.launch == "cold":
            return self._run_cold(*cold)
        key = (runtime, facts.image_id)
        reason = self._cold_because.get(key) or _command_obstacle(facts)
        if reason is None:
            try:
                return self._run_warm(runtime, facts, options, described, volume, input_format, device, report,
                                      work_folder, timings)
            except CannotKeepWarm as error:
                self._stop_warm(key)
                reason = str(error)
        segmented = self._run_cold(*cold)
        if key not in self._cold_because:
            segmented.notes.append(f"{facts.reference} ran cold, in a container per run: {reason}")
            self._cold_because[key] = reason
        return segmented

    def _inspected(self, runtime: str, reference: str, private_folder: str, scratch: str, entry_point: bool):
        """The image's facts, read again only when the reference names another image (a rebuilt tag)."""
        key = (runtime, reference, entry_point)
        cached = self._facts.get(key)
        if cached is not None and cached.image_id == image_description(runtime, reference).get("Id"):
            return cached
        if cached is not None:
            self._stop_warm((runtime, cached.image_id))
        facts = inspect_map(runtime, reference, container_name(private_folder, "inspect"), scratch, entry_point)
        self._facts[key] = facts
        return facts

    def _run_cold(self, runtime, facts, options, package, volume, input_format, report, work_folder, timings):
        input_folder, output_folder = os.path.join(work_folder, "map-input"), os.path.join(work_folder, "map-output")
        os.makedirs(output_folder)
        os.makedirs(input_folder)
        started = time.perf_counter()
        original_series = os.path.join(work_folder, DICOM_SOURCE_FOLDER)
        if input_format == "dicom" and os.path.isdir(original_series):
            input_folder = original_series
        elif input_format == "dicom":
            write_dicom_series(volume, input_folder)
        else:
            write_volume(os.path.join(input_folder, "input.nii.gz"), volume)
        timings["write_app_input"] = time.perf_counter() - started

        report("inference", None)
        started = time.perf_counter()
        mounts = ["-v", f"{input_folder}:{facts.input_path}:ro", "-v", f"{output_folder}:{facts.output_path}"]
        _run_container(runtime, [*options, *mounts, facts.reference],
                       container_name(os.path.dirname(work_folder), "run"), os.path.join(work_folder, APP_LOG))
        timings["container"] = time.perf_counter() - started
        return segmented_outputs(output_folder, volume, package, timings, report)

    def _run_warm(self, runtime, facts, options, package, volume, input_format, device, report, work_folder, timings):
        client = self._warm_client(runtime, facts, options, os.path.dirname(work_folder))
        started = time.perf_counter()
        input_path = os.path.join(work_folder, "map-input.npy")
        output_path = os.path.join(work_folder, "map-output.npy")
        np.save(input_path, volume.array, allow_pickle=False)
        timings["write_app_input"] = time.perf_counter() - started
        app = dataclasses.replace(  # the image's Deploy app, run warm by the worker in its container
            package, mode=DeployKind.mode, path=_app_path(facts), content_hash=facts.image_id,
            settings=DeploySettings(app=_app_path(facts), model=facts.model_path, input_format=input_format))
        started = time.perf_counter()
        started_container = client.start()
        try:
            packages = client.environment()["packages"]  # its hello: the image's Python runs the worker
        except WorkerError as error:
            raise CannotKeepWarm(f"its Python {client.python} cannot run MonaiDeployer's worker ({error})") from error
        lacking = [name for name in WARM_FILE_PACKAGES[input_format] if name not in packages]
        if lacking:
            raise CannotKeepWarm(f"its Python {client.python} lacks {', '.join(lacking)}, with which the worker "
                                 f"there hands the app {input_format} files and reads its output")
        try:
            call = client.call("run", package=app.to_dict(), input=input_path, output=output_path,
                               ijk_to_ras=volume.ijk_to_ras.tolist(), device=device)
            answer = call.wait(progress=lambda event: _forward(event, report))
        except WorkerError as error:
            raise WorkerError(f"the warm container of {facts.reference} failed ({error}); a MAP that cannot be "
                              "kept warm may still run cold") from error
        if started_container and client.startup_seconds is not None:
            timings["start_container"] = client.startup_seconds
        timings["container_request"] = time.perf_counter() - started
        timings.update({f"container_{stage}": seconds for stage, seconds in answer["timings"].items()})

        others = [(other["name"], np.load(other["file"], allow_pickle=False), _int_keys(other["labels"]))
                  for other in answer["others"]]
        return Segmented(np.load(output_path, allow_pickle=False), _int_keys(answer["labels"]), dict(package.colors),
                         timings, model_cached=bool(answer.get("model_cached")), others=others)

    def _warm_client(self, runtime: str, facts, options: list, private_folder: str) -> WorkerClient:
        """The image's warm container (started by the first call); a dead one is removed and started again."""
        key = (runtime, facts.image_id)
        if key not in self._warm:
            name = container_name(private_folder, f"warm-{len(self._warm) + 1}")
            python = facts.command[0]
            launcher = [runtime, "run", "-i", "--rm", "--name", name, *options,
                        "-v", f"{private_folder}:{private_folder}", "-v", f"{LIBRARY_PARENT}:{LIBRARY_MOUNT}:ro",
                        "-e", "PYTHONDONTWRITEBYTECODE=1", "--entrypoint", python, facts.reference]
            self._warm[key] = (WorkerClient(python, launcher=launcher, library_parent=LIBRARY_MOUNT), name)
        client, name = self._warm[key]
        if not client.alive:
            remove_containers(runtime, name)
        return client

    def _stop_warm(self, key: tuple) -> None:
        client, name = self._warm.pop(key, (None, None))
        if client is not None:
            client.close()
            remove_containers(key[0], name)

    def close(self) -> None:
        """Stop every warm container (the worker is shutting down)."""
        for key in list(self._warm):
            self._stop_warm(key)

def hardened_options(facts) -> list:
    """What every container of ours gets: the caller's uid:gid, no network, no capabilities, no new privileges,
    the manifest's shared memory, and the ``HOLOSCAN_*`` paths."""
    options = ["--network", "none", "--cap-drop", "all", "--security-opt", "no-new-privileges",
               "-e", f"HOLOSCAN_INPUT_PATH={facts.input_path}", "-e", f"HOLOSCAN_OUTPUT_PATH={facts.output_path}"]
    if hasattr(os, "getuid"):  # Windows has no uid: Docker Desktop maps file ownership itself
        options += ["--user", f"{os.getuid()}:{os.getgid()}"]
    shared_memory = _size_for_runtime(facts.resources.get("sharedMemory"))
    return options + (["--shm-size", shared_memory] if shared_memory else [])


def gpu_options(runtime: str, device: str, facts, host) -> list:
    """GPU flags only when asked for (device auto or cuda) and usable (the CUDA verdict says so).

    Asked for cuda and not usable stops the run with the verdict's reason and fix; auto then runs on the CPU.
    """
    if device == "cpu":
        return []
    verdict = facts.verdict(host)
    if verdict.kind == "gpu":
        return ["--device", "nvidia.com/gpu=all"] if os.path.basename(runtime) == "podman" else ["--gpus", "all"]
    if device == "cuda":
        raise PackageError(f"{facts.reference} cannot use a GPU here: {verdict.text}")
    return []


def _command_obstacle(facts) -> str | None:
    """Why the manifest's command cannot be kept warm (only ``python [options] APP`` can), or None."""
    command = facts.command
    if not command or not os.path.basename(command[0]).startswith("python"):
        return f"it runs {' '.join(command) or 'no command'}, not a Python app"
    if _app_path(facts) is None:
        return f"it runs {' '.join(command)}, with no app file or folder to import"
    return None


def _app_path(facts) -> str | None:
    """The app file or folder the manifest's ``python [options] APP`` runs (``python3 -u /opt/holoscan/app``);
    None for ``-m``/``-c``, whose code is no file to import."""
    arguments = iter(facts.command[1:])
    for part in arguments:
        if part in ("-m", "-c"):
            return None
        if part in PYTHON_OPTIONS_WITH_VALUE:
            next(arguments, None)
        elif not part.startswith("-"):
            return part
    return None


def _int_keys(labels: dict) -> dict:
    return {int(value): name for value, name in labels.items()}


def _forward(event, report) -> None:
    if event.kind == "progress":
        report(event.stage, event.fraction)
    elif event.kind == "log":
        print(event.message, file=sys.stderr)


def _copy_linked_series(folder: str) -> None:
    """Replace links to the original DICOM files by copies: a container cannot follow links out of its mounts."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.islink(path):
            source = os.path.realpath(path)
            os.remove(path)
            shutil.copyfile(source, path)


def _run_container(runtime: str, arguments: list, name: str, log_path: str) -> None:
    """One cold run. ``--tty`` gives the app one terminal for stdout and stderr: its log holds them merged as
    written, in its own order (with two pipes the runtime interleaves them as it reads, and an app writing to a
    pipe buffers its stdout, so a print before a crash came after the crash's message)."""
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            finished = subprocess.run([runtime, "run", "--rm", "--tty", "--name", name, *arguments],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=False)
    finally:
        remove_containers(runtime, name)
    if finished.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            lines = [line.rstrip() for line in log if line.strip()]
        raise PackageError(f"the MAP's app exited with status {finished.returncode}: "
                           + " | ".join(traceback_tail(lines)))


def _size_for_runtime(size) -> str:
    """Kubernetes-style sizes of the manifest ("1Gi", "512Mi") as docker/podman sizes ("1g", "512m")."""
    if not size:
        return ""
    text = str(size).strip()
    for suffix, unit in (("Gi", "g"), ("Mi", "m"), ("Ki", "k"), ("G", "g"), ("M", "m")):
        if text.endswith(suffix):
            return text[: -len(suffix)] + unit
    return text
