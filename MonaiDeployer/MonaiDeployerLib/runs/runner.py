"""The Python API: ``Runner`` keeps one warm worker; ``run`` turns a volume into a labelled result.

    from MonaiDeployerLib import Runner, open_package, read_volume, write_volume
    with Runner() as runner:
        result = runner.run(open_package("model.ts"), read_volume("ct.nii.gz"))
    write_volume("seg.seg.nrrd", result.labelmap, result.labels, result.colors)
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from ..environment.requirements import check_requirements, missing_requirements, normalise_name
from ..errors import InputError, PackageError, WorkerError
from ..imageio.dicom import DICOM_SOURCE_FOLDER
from ..imageio.volume import Volume, check_volume
from ..packages import PackageInfo, open_package
from ..packages.kind import FRAMEWORKS
from ..packages.trust import TrustList
from ..transport.client import WorkerClient
from ..transport.job import Job
from . import leftovers

logger = logging.getLogger(__name__)


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
    worker_memory: int | None = None  # the worker's resident bytes once the run was done (None: not known)

    @property
    def overlapping(self) -> bool:
        """True when ``labelmap`` holds one mask per label (a voxel may be in several segments)."""
        return self.labelmap.array.ndim == 4


class Runner:
    """A context manager over one warm worker process; runs are one at a time."""

    def __new__(cls, *arguments, server: str | None = None, **options):
        """``Runner(server=URL)`` is a ``RemoteRunner``: the same calls and ``Result``, its runs on that server."""
        if server is None:
            return super().__new__(cls)
        from ..serving.remote_runner import RemoteRunner

        return RemoteRunner(server)

    def __init__(self, python: str | None = None, device: str = "auto", trust_list: TrustList | None = None,
                 threads: int | None = None, server: None = None):
        """``threads``: the CPU threads torch uses in the worker (default: torch's own, every core); workers that
        share a machine (a batch's ``jobs``) each take their part, or they slow each other down. ``server``: see
        ``__new__``."""
        self.device = device
        self.threads = threads
        self.client = WorkerClient(python)
        self.trust_list = trust_list or TrustList()
        self._job = None
        self._jobs_folder = None
        self._owner_told = None  # the worker process that knows this runner's private folder
        self._warm_pid = None  # the worker process asked to import torch and MONAI
        self._warmup = None
        self._closed = False
        self._fresh_worker = False  # a worker started by ready(), not yet counted in a run's timings

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
        elif self._job is None and self._warmup is not None and not self._warmup.done:
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
        """Start the worker and, when its Python has torch and MONAI, begin importing them there; returns that job
        to poll, or None when there is nothing to import. Blocks only until the worker has started.

        Poll the job alone, and stop polling it once a run is submitted: jobs share the worker's messages.
        """
        installed = self.environment()["packages"]
        if any(normalise_name(name) not in installed for name in FRAMEWORKS):
            return None
        self._warm_pid = self.client.pid
        self._warmup = self.client.call("warmup")
        return self._warmup

    @property
    def warmed(self) -> bool:
        """The running worker has been asked to import torch and MONAI by ``begin_warmup``."""
        return self.client.alive and self._warm_pid == self.client.pid

    def submit(self, package, volume: Volume, trust: bool = False, dicom_files: list | None = None,
               job: Job | None = None) -> Job:
        """Start a run and return its ``Job`` at once: poll it (as Slicer's panel does) or ``wait`` for its ``Result``.

        Bundles and Deploy apps run code: one the user has not trusted before is refused unless
        ``trust`` is True. A requirement the worker's environment lacks altogether stops the run.
        ``dicom_files``: the DICOM series the volume was loaded from; a Deploy app that reads DICOM
        gets these original files instead of a series written from the volume. ``job``: the job to run it as
        (a ``NodeSegmentation`` adds its own step after the result); default a new ``Job``.
        """
        check_volume(volume)
        package = self.ready(package, trust)
        return self.submit_folder(self.prepared(package, volume, dicom_files or []), job)

    def ready(self, package, trust: bool = False) -> PackageInfo:
        """The checks before runs of ``package`` (a path is opened): trusted, its requirements met, the worker started
        and told who owns this runner's private folder, before any patient data is written there."""
        self._check_idle()
        package = package if isinstance(package, PackageInfo) else open_package(package)
        self.trust_list.check(package, trust)
        self._start_worker()
        missing = missing_requirements(package.requirements, self.environment()["packages"])
        if missing:
            raise PackageError(f"{package.name} cannot run in {self.python}: " + "; ".join(missing))
        runtime = package.kind.container_runtime(package)
        if runtime is not None:
            leftovers.note_runtime(self.private_folder, runtime)
        return package

    def prepared(self, package: PackageInfo, volume: Volume, dicom_files: list) -> RunFolder:
        """A case to hand over with ``submit_folder``: its run folder, written in this runner's private folder."""
        return RunFolder(self.private_folder, package, volume, dicom_files)

    def submit_folder(self, folder: RunFolder, job: Job | None = None) -> Job:
        """Start the run of a folder prepared in ``private_folder`` for a package ``ready`` has checked (a batch
        writes the next case's folder while the previous case runs). The folder is removed however the run ends."""
        try:
            self._check_idle()
            self._start_worker()
            started_worker, self._fresh_worker = self._fresh_worker, False
            package, kind = folder.package, folder.package.kind
            folder.submitted()
            job = self.client.call("run", job=job, package=package.to_dict(), input=folder.input,
                                   output=folder.output, ijk_to_ras=folder.volume.ijk_to_ras.tolist(),
                                   device=self.device, threads=self.threads)
        except BaseException:
            folder.remove()
            raise
        started_worker = started_worker or job.request.started_worker
        job.then(lambda answer: folder.result(answer, started_worker, self.client.startup_seconds),
                 "reading the result")
        job.on_cancel(lambda: kind.clean_up_cancelled(package, self.private_folder))
        job.on_end(folder.remove)
        logger.debug("Run of %s (%s) submitted to worker %s", package.name, package.mode, self.client.pid)
        self._job = job
        return job

    def _check_idle(self) -> None:
        self._check_open()
        if self._job is not None and not self._job.done:
            raise WorkerError("a run is already in progress; wait for it or cancel it")

    def _start_worker(self) -> None:
        """Start the worker unless it runs, and name this runner's private folder to it. A worker started since the
        last run was submitted is noted: that run's timings include its start-up."""
        self._fresh_worker = self.client.start() or self._fresh_worker
        if self._owner_told != self.client.pid:  # before any patient data is written: who cleans up if we die
            self.client.tell("owner", folder=self.private_folder)
            self._owner_told = self.client.pid

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

    def run_many(self, package, inputs, trust: bool = False, jobs: int = 1, timeout: float | None = None,
                 progress=None):
        """Run on many cases, yielding each one's ``batch.CaseOutcome`` (its source, and its ``Result`` or error) as
        soon as it is done. ``inputs``: volume files, folders of them or of DICOM series, ``Volume``s, or a mix.

        Pipelined: the next case is read while the worker runs, and handed over before a finished one is yielded.
        ``jobs`` > 1 runs that many workers (this runner's and ``jobs - 1`` more, closed at the end); ``timeout``
        stops a case that takes longer; ``progress(case, event)`` gets the running cases' events.
        """
        from .batch import Batch
        from .cases import find_cases

        cases = find_cases(inputs)
        threads, self.threads = self.threads, self.threads or threads_per_job(jobs)
        more = [Runner(self.python, self.device, self.trust_list, self.threads) for _ in range(max(jobs, 1) - 1)]
        try:
            with Batch([self, *more], package, cases, trust, timeout) as batch:
                yield from batch.outcomes(progress)
        finally:
            self.threads = threads
            for runner in more:
                runner.close()

    def run(self, package, volume: Volume, progress=None, timeout: float | None = None, trust: bool = False,
            dicom_files: list | None = None) -> Result:
        """Run and wait; ``progress`` gets each ``protocol.Event``."""
        return self.submit(package, volume, trust, dicom_files).wait(timeout=timeout, progress=progress)


def threads_per_job(jobs: int) -> int | None:
    """Each of ``jobs`` workers' share of this machine's cores (None for one worker: it takes them all)."""
    return max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None


class RunFolder:
    """One run's private folder in the runner's: the input written for the worker, its result read back. Removed
    however the run ends (the job's ``on_end``)."""

    def __init__(self, parent_folder: str, package: PackageInfo, volume: Volume, dicom_files: list):
        self.package = package
        self.volume = volume
        self._started = time.perf_counter()
        self._folder = tempfile.mkdtemp(prefix="run-", dir=parent_folder)
        self.input, self.output = self._path("input.npy"), self._path("output.npy")
        try:
            np.save(self.input, volume.array, allow_pickle=False)
            _link_files(dicom_files, self._path(DICOM_SOURCE_FOLDER))
        except BaseException:
            self.remove()
            raise
        self._write_seconds = time.perf_counter() - self._started

    def submitted(self) -> None:
        """The run starts now: its total time counts from here (plus the writing), not from when it was prepared."""
        self._started = time.perf_counter() - self._write_seconds

    def _path(self, name: str) -> str:
        return os.path.join(self._folder, name)

    def result(self, answer: dict, started_worker: bool, startup_seconds: float | None) -> Result:
        """The worker's answer and the files it wrote, as a ``Result`` on the input's grid (``started_worker``: this
        run started the worker, which took ``startup_seconds``)."""
        try:
            return self._read_result(answer, started_worker, startup_seconds)
        except WorkerError:
            raise
        except Exception as error:
            raise WorkerError(f"cannot read the result: {error}") from error

    def _read_result(self, answer: dict, started_worker: bool, startup_seconds: float | None) -> Result:
        started = time.perf_counter()
        labelmap = np.load(self.output, allow_pickle=False)
        labels = {int(value): name for value, name in answer["labels"].items()}
        _check_result_shape(labelmap, self.volume, labels)
        timings = {"write_input": self._write_seconds}
        if started_worker and startup_seconds is not None:
            timings["start_worker"] = startup_seconds
        timings.update(answer["timings"])
        timings["read_output"] = time.perf_counter() - started
        timings["total"] = time.perf_counter() - self._started
        return Result(
            labelmap=Volume(labelmap, self.volume.ijk_to_ras.copy()),
            labels=labels,
            colors={int(value): tuple(color) for value, color in answer["colors"].items()},
            timings=timings,
            warm={"worker": not started_worker, "imports": "import" not in timings,
                  "model": bool(answer.get("model_cached"))},
            package=self.package,
            others=[self._read_other(other) for other in answer.get("others", [])],
            notes=list(answer.get("notes", [])),
            worker_memory=answer.get("resident_bytes"),
        )

    def _read_other(self, other: dict) -> Result:
        labelmap = np.load(other["file"], allow_pickle=False)
        labels = {int(value): name for value, name in other["labels"].items()}
        _check_result_shape(labelmap, self.volume, labels)
        return Result(Volume(labelmap, self.volume.ijk_to_ras.copy()), labels, package=self.package,
                      name=other["name"])

    def remove(self) -> None:
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
