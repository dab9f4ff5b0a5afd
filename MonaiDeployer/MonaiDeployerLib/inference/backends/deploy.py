"""Deploy mode: a MONAI Deploy App SDK application, run as its author wrote it, on files in a private folder.

The volume is written where the app reads (``-i``: NIfTI, or a DICOM series for apps that read
DICOM), the app writes where it likes under ``-o`` (NIfTI, NRRD or DICOM SEG), and its output is
read back onto the input grid. Cold, the worker runs
``python app.py -i IN -o OUT -m MODEL`` in a new process, as the SDK documents. Warm (the default),
the worker imports the app once and builds and runs its ``Application`` again for each request,
so a prediction pays neither Python, torch, MONAI nor Holoscan start-up.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
import traceback

from ...errors import CannotKeepWarm, PackageError
from ...imageio.dicom import DICOM_SOURCE_FOLDER, is_dicom_seg, read_dicom_seg, write_dicom_series
from ...imageio.volume import SUFFIXES, read_volume, volume_suffix, write_volume
from ...packages.deployapp_files import app_file, warm_obstacle
from . import Segmented, on_input_grid

APP_LOG = "app.log"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TRACEBACK_LINES = 6


class DeployBackend:

    def __init__(self):
        self._applications = {}

    def run(self, package, volume, device: str, report, work_folder: str) -> Segmented:
        settings = package.settings
        timings = {}
        input_folder, output_folder = os.path.join(work_folder, "app-input"), os.path.join(work_folder, "app-output")
        os.makedirs(input_folder)
        os.makedirs(output_folder)
        started = time.perf_counter()
        original_series = os.path.join(work_folder, DICOM_SOURCE_FOLDER)
        if settings.input_format == "dicom" and os.path.isdir(original_series):
            input_folder = original_series  # the files the volume came from
        elif settings.input_format == "dicom":
            write_dicom_series(volume, input_folder)
        else:
            write_volume(os.path.join(input_folder, "input.nii"), volume)  # uncompressed: 20 times faster to write
        timings["write_app_input"] = time.perf_counter() - started

        app = app_file(settings.app)
        argv = [sys.executable, app, "-i", input_folder, "-o", output_folder, "-m", settings.model]
        report("inference", None)
        started = time.perf_counter()
        if settings.launch == "cold":
            _run_cold(argv, device, os.path.join(work_folder, APP_LOG))
            timings["app_cold"] = time.perf_counter() - started
        else:
            application, imported = self._application(package)
            if not imported:
                timings["import_app"] = time.perf_counter() - started
                started = time.perf_counter()
            _run_warm(application, argv)
            timings["app"] = time.perf_counter() - started

        segmented = segmented_outputs(output_folder, volume, package, timings, report)
        segmented.model_cached = settings.launch == "warm"
        if settings.cold_because:
            segmented.notes.append(f"the app ran cold: {settings.cold_because}")
        return segmented

    def _application(self, package):
        """The app's ``Application`` class, imported once per app content; (class, already imported)."""
        key = (package.settings.app, package.content_hash)
        if key in self._applications:
            return self._applications[key], True
        app_path = app_file(package.settings.app)
        obstacle = warm_obstacle(app_path)
        if obstacle:  # importing it would run it: a plain script does its work at import
            raise CannotKeepWarm(f"{app_path} cannot be kept warm: {obstacle}")
        folder = os.path.dirname(app_path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        name = f"monaideployer_app_{package.content_hash[:12]}"
        spec = importlib.util.spec_from_file_location(name, app_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[name]
            raise PackageError(f"the app cannot be imported: {_last_lines(error)}") from error
        from monai.deploy.core import Application

        classes = [value for value in vars(module).values()
                   if isinstance(value, type) and issubclass(value, Application) and value.__module__ == name]
        if len(classes) != 1:
            raise PackageError(f"{app_path} defines {len(classes)} Application classes; a Deploy app defines one "
                               "(or run it cold)")
        self._applications[key] = classes[0]
        return classes[0], False


def _run_cold(argv: list, device: str, log_path: str) -> None:
    """``python app.py -i -o -m`` in the worker's Python; its output goes to a log whose end explains a failure.

    The app is in the worker's process group: cancelling the run stops it too.
    """
    environment = dict(os.environ, PYTHONUNBUFFERED="1")  # the log keeps prints and tracebacks in the app's order
    if device == "cpu":
        environment["CUDA_VISIBLE_DEVICES"] = ""
    with open(log_path, "w", encoding="utf-8") as log:
        finished = subprocess.run(argv, cwd=os.path.dirname(argv[1]), stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, env=environment, check=False)
    if finished.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            lines = [line.rstrip() for line in log if line.strip()]
        raise PackageError(f"the app exited with status {finished.returncode}: "
                           + " | ".join(traceback_tail(lines)))


def _run_warm(application, argv: list) -> None:
    try:
        application(argv).run()
    except Exception as error:  # an app can raise anything; its own last lines say what
        raise PackageError(f"the app failed: {_last_lines(error)}") from error


def _last_lines(error: BaseException) -> str:
    lines = traceback.format_exception(error)
    return " | ".join(traceback_tail([line.rstrip() for text in lines for line in text.splitlines()]))


def traceback_tail(lines: list) -> list:
    """The last lines of an app's output that tell where it failed: its traceback's end, else its last words.

    Terminal colour codes (a MAP's app writes to a terminal) are left out."""
    lines = [stripped for stripped in (ANSI_ESCAPE.sub("", line).strip() for line in lines) if stripped]
    starts = [index for index, line in enumerate(lines) if line.startswith("Traceback")]
    tail = lines[starts[-1]:] if starts else lines
    return [line.strip() for line in tail[-TRACEBACK_LINES:]] or ["no output"]


def segmented_outputs(folder: str, volume, package, timings: dict, report) -> Segmented:
    """The app's outputs as the backend's answer: the first is the result, the others come with it."""
    report("postprocess", None)
    started = time.perf_counter()
    outputs = read_outputs(folder, volume, package)
    timings["read_app_output"] = time.perf_counter() - started
    _, labelmap, labels = outputs[0]
    return Segmented(labelmap, labels, dict(package.colors), timings, others=outputs[1:])


def read_outputs(folder: str, volume, package) -> list:
    """Every output the app wrote under ``-o`` (NIfTI or NRRD labelmaps, DICOM SEGs), each on the input grid.

    Returns (name, labelmap, labels) in file-name order; a DICOM SEG names its segments, a labelmap
    file does not (its labels come from the package, else label_N).
    """
    written = sorted(os.path.join(parent, name) for parent, _, names in os.walk(folder) for name in names)
    outputs = [path for path in written if volume_suffix(path) in SUFFIXES or is_dicom_seg(path)]
    if not outputs:
        listed = ", ".join(os.path.relpath(path, folder) for path in written)
        raise PackageError(f"the app wrote no NIfTI, NRRD or DICOM SEG output (it wrote {listed or 'nothing'})")
    return [(name, labelmap, _labels_of(labelmap, labels, package))
            for name, labelmap, labels in (_read_output(path, folder, volume) for path in outputs)]


def _read_output(path: str, folder: str, volume) -> tuple:
    name = os.path.relpath(path, folder)
    if not volume_suffix(path):
        output, labels = read_dicom_seg(path)
    else:
        try:
            output, labels = read_volume(path), {}
        except Exception as error:
            raise PackageError(f"the app's output {name} cannot be read: {error}") from error
    return name, on_input_grid(output, volume), labels


def _labels_of(labelmap, own_labels: dict, package) -> dict:
    """An output's names: its own (DICOM SEG), else the package's, else label_N for the values it holds."""
    import numpy as np

    return own_labels or package.labels or {int(value): f"label_{int(value)}" for value in np.unique(labelmap) if value}
