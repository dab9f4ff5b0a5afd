"""The Python API: ``Runner`` keeps one warm worker; ``run`` turns a volume into a labelled result.

    from MonaiDeployerLib import Runner, open_package, read_volume, write_volume
    with Runner() as runner:
        result = runner.run(open_package("model.ts"), read_volume("ct.nii.gz"))
    write_volume("seg.seg.nrrd", result.labelmap, result.labels, result.colors)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from ..environment.containers import find_runtime, remove_containers_of
from ..errors import InputError, PackageError, WorkerError
from ..imageio.dicom import DICOM_SOURCE_FOLDER
from ..imageio.volume import Volume, check_volume
from ..inference.backends import FRAMEWORKS
from ..packages.info import PackageInfo, check_requirements, missing_requirements, normalise_name, open_package
from ..packages.trust import TrustList
from ..transport.client import WorkerClient
from . import leftovers


@dataclass
class Result:
    """A run's answer: ``labelmap`` lies on the input's grid; ``labels`` maps values to names.

    ``labelmap.array`` is [i, j, k] with one label value per voxel, or, when the model's segments
    may overlap (``overlapping``, e.g. brats' tumor core, whole tumor and enhancing tumor),
    [i, j, k, C] with one 0/1 mask per label: channel c holds label value c + 1.
    ``others``: further outputs a Deploy app wrote in the same run (each a ``Result`` whose
    ``name`` is the file's path under the app's output folder), on the same grid.
    """

    labelmap: Volume
    labels: dict
    colors: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    warm: dict = field(default_factory=dict)
    package: PackageInfo | None = None
    name: str = ""
    others: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # how it ran, where the user should know (e.g. cold, and why)

    @property
    def overlapping(self) -> bool:
        """True when ``labelmap`` holds one mask per label (a voxel may be in several segments)."""
        return self.labelmap.array.ndim == 4


class Runner:
    """A context manager over one warm worker process; runs are one at a time."""

    def __init__(self, python: str | None = None, device: str = "auto", trust_list: TrustList | None = None):
        self.device = device
        self.client = WorkerClient(python)
        self.trust_list = trust_list or TrustList()
        self._job = None
        self._jobs_folder = None
        self._owner_told = None  # the worker process that knows this runner's private folder
        self._warm_pid = None  # the worker process asked to import torch and MONAI
        self._warmup_call = None
        self._closed = False

    @property
    def python(self) -> str:
        return self.client.python

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker (cancelling a run in flight) and any MAP container it kept warm. A closed runner starts
        no worker again: work still queued for it (a panel's card, a warm-up) fails instead."""
        self._closed = True
        if self._job is not None and not self._job.done:
            self._job.cancel()
        elif self._job is None and self._warmup_call is not None and not self._warmup_call.done:
            self.client.kill()  # it would read the request to stop only once torch and MONAI are imported
        self.client.close()
        if self._jobs_folder is not None:  # with the containers a killed worker could not stop
            leftovers.remove_owned([self._jobs_folder])
            self._jobs_folder = None

    def environment(self) -> dict:
        self._check_open()
        return self.client.environment()

    def _check_open(self) -> None:
        if self._closed:
            raise WorkerError("this runner was closed (the worker Python or device changed)")

    def check_requirements(self, package: PackageInfo) -> list:
        return check_requirements(package.requirements, self.environment()["packages"])

    def warmup(self, timeout: float | None = None) -> dict:
        """Start the worker and import torch and MONAI now, so the first run pays neither."""
        return self.client.call("warmup").wait(timeout)

    def begin_warmup(self):
        """Start the worker and, when its Python has torch and MONAI, begin importing them there; returns that call
        to poll, or None when there is nothing to import. Blocks only until the worker has started.

        Poll the call alone, and stop polling it once a run is submitted: calls share the worker's messages.
        """
        installed = self.environment()["packages"]
        if any(normalise_name(name) not in installed for name in FRAMEWORKS):
            return None
        self._warm_pid = self.client.pid
        self._warmup_call = self.client.call("warmup")
        return self._warmup_call

    @property
    def warmed(self) -> bool:
        """The running worker has been asked to import torch and MONAI by ``begin_warmup``."""
        return self.client.alive and self._warm_pid == self.client.pid

    def submit(self, package, volume: Volume, trust: bool = False, dicom_files: list | None = None) -> Job:
        """Start a run and return at once; poll the ``Job`` (as Slicer's panel does) or ``wait`` for it.

        Bundles and Deploy apps run code: one the user has not trusted before is refused unless
        ``trust`` is True. A requirement the worker's environment lacks altogether stops the run.
        ``dicom_files``: the DICOM series the volume was loaded from; a Deploy app that reads DICOM
        gets these original files instead of a series written from the volume.
        """
        self._check_open()
        if self._job is not None and not self._job.done:
            raise WorkerError("a run is already in progress; wait for it or cancel it")
        check_volume(volume)
        package = package if isinstance(package, PackageInfo) else open_package(package)
        self.trust_list.check(package, trust)
        started_worker = self.client.start()
        if self._owner_told != self.client.pid:  # before any patient data is written: who cleans up if we die
            self.client.tell("owner", folder=self.private_folder)
            self._owner_told = self.client.pid
        missing = missing_requirements(package.requirements, self.environment()["packages"])
        if missing:
            raise PackageError(f"{package.name} cannot run in {self.python}: " + "; ".join(missing))
        if package.mode == "map":
            leftovers.note_runtime(self.private_folder, find_runtime(package.settings.get("runtime")))
        self._job = Job(self.client, package, volume, self.device, started_worker, dicom_files or [],
                        self.private_folder)
        return self._job

    @property
    def private_folder(self) -> str:
        """The folder of this runner's run folders (a warm MAP container sees it, and nothing else of the host).

        It names this process as its owner: if the process is killed, its worker removes the folder, and
        failing that the next runner does. Pass it as ``write_volume(..., ledger=)`` so that an output file
        being written when the process is killed is removed with it.
        """
        if self._jobs_folder is None:
            self._jobs_folder = leftovers.make_private_folder()
        return self._jobs_folder

    def run(self, package, volume: Volume, progress=None, timeout: float | None = None, trust: bool = False,
            dicom_files: list | None = None) -> Result:
        """Run and wait; ``progress`` gets each ``protocol.Event``."""
        return self.submit(package, volume, trust, dicom_files).wait(timeout=timeout, progress=progress)


class Job:
    """One run: the input goes to a private folder in ``parent_folder`` that is removed however the run ends."""

    def __init__(self, client: WorkerClient, package: PackageInfo, volume: Volume, device: str,
                 started_worker: bool = False, dicom_files: list = (), parent_folder: str | None = None):
        self.package = package
        self.volume = volume
        self.result = None
        self.error = None
        self._started = time.perf_counter()
        self._folder = tempfile.mkdtemp(prefix="run-", dir=parent_folder)
        try:
            np.save(self._path("input.npy"), volume.array, allow_pickle=False)
            _link_files(dicom_files, self._path(DICOM_SOURCE_FOLDER))
            self._write_seconds = time.perf_counter() - self._started
            self._call = client.call("run", package=package.to_dict(), input=self._path("input.npy"),
                                     output=self._path("output.npy"), ijk_to_ras=volume.ijk_to_ras.tolist(),
                                     device=device)
            self._started_worker = started_worker or self._call.started_worker
        except BaseException:
            self._remove_folder()
            raise

    def _path(self, name: str) -> str:
        return os.path.join(self._folder, name)

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    @property
    def stage(self) -> str:
        return self._call.stage

    def poll(self, block_seconds: float = 0) -> list:
        events = self._call.poll(block_seconds)
        if self._call.done and not self.done:
            self._finish()
        return events

    def wait(self, timeout: float | None = None, progress=None) -> Result:
        try:
            self._call.wait(timeout=timeout, on_event=progress)
        finally:
            if not self.done:
                self._finish()
        if self.error is not None:
            raise self.error
        return self.result

    def cancel(self) -> None:
        self._call.cancel()
        if self.package.mode == "map":  # killing the worker does not stop its containers: remove them by name
            remove_containers_of(find_runtime(self.package.settings.get("runtime")), os.path.dirname(self._folder))
        if not self.done:
            self._finish()

    def _finish(self) -> None:
        try:
            if self._call.error is not None:
                self.error = self._call.error
            else:
                self.result = self._read_result(self._call.answer)
        except Exception as error:
            self.error = error if isinstance(error, WorkerError) else WorkerError(f"cannot read the result: {error}")
        finally:
            self._remove_folder()

    def _read_result(self, answer: dict) -> Result:
        started = time.perf_counter()
        labelmap = np.load(self._path("output.npy"), allow_pickle=False)
        labels = {int(value): name for value, name in answer["labels"].items()}
        _check_result_shape(labelmap, self.volume, labels)
        timings = {"write_input": self._write_seconds}
        if self._started_worker and self._call.client.startup_seconds is not None:
            timings["start_worker"] = self._call.client.startup_seconds
        timings.update(answer["timings"])
        timings["read_output"] = time.perf_counter() - started
        timings["total"] = time.perf_counter() - self._started
        return Result(
            labelmap=Volume(labelmap, self.volume.ijk_to_ras.copy()),
            labels=labels,
            colors={int(value): tuple(color) for value, color in answer["colors"].items()},
            timings=timings,
            warm={"worker": not self._started_worker, "imports": "import" not in timings,
                  "model": bool(answer.get("model_cached"))},
            package=self.package,
            others=[self._read_other(other) for other in answer.get("others", [])],
            notes=list(answer.get("notes", [])),
        )

    def _read_other(self, other: dict) -> Result:
        labelmap = np.load(other["file"], allow_pickle=False)
        labels = {int(value): name for value, name in other["labels"].items()}
        _check_result_shape(labelmap, self.volume, labels)
        return Result(Volume(labelmap, self.volume.ijk_to_ras.copy()), labels, package=self.package,
                      name=other["name"])

    def _remove_folder(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)


def _link_files(paths, folder: str) -> None:
    """Links to ``paths`` in ``folder`` (copies where links cannot be made): the originals are never touched."""
    if not paths:
        return
    os.makedirs(folder)
    for index, path in enumerate(paths):
        if not os.path.isfile(path):
            raise InputError(f"DICOM file not found: {path}")
        target = os.path.join(folder, f"{index:05d}.dcm")
        try:
            os.symlink(os.path.abspath(path), target)
        except OSError:
            shutil.copyfile(path, target)


def _check_result_shape(labelmap: np.ndarray, volume: Volume, labels: dict) -> None:
    """A labelmap on the input's grid (whatever its input channels), or one mask per label on it."""
    grid = volume.shape[:3]
    if labelmap.ndim not in (3, 4) or labelmap.shape[:3] != grid:
        raise WorkerError(f"the result's shape {labelmap.shape} does not fit the input's grid {grid}")
    if labelmap.ndim == 4 and sorted(labels) != list(range(1, labelmap.shape[3] + 1)):
        raise WorkerError(f"the result has {labelmap.shape[3]} overlapping masks but labels {sorted(labels)}; "
                          "mask c must be label c + 1")
