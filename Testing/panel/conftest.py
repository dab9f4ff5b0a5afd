"""The panel's tests: MonaiDeployer.py, unchanged, on Slicer 5.10's own Python layer (Testing/slicer_harness).

The harness makes this process look like Slicer's embedded Python for these tests only (package scope) and puts it
back afterwards. "Slicer's Python" is a virtual environment layered over the test one (a ``.pth`` file), found as
``PythonSlicer`` on PATH as in Slicer, so that what the panel installs goes there and nowhere else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import slicer_harness
from slicer_harness.events import wait_until

REPO = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO / "MonaiDeployer" / "MonaiDeployer.py"
SAMPLE_MODEL = REPO / "MonaiDeployer" / "Resources" / "SampleModels" / "PhantomUNet.ts"
SAMPLE_BUNDLE = REPO / "MonaiDeployer" / "Resources" / "SampleModels" / "PhantomBundle"

_reason = slicer_harness.missing_reason()
if _reason:
    pytest.skip(f"the panel harness cannot run: {_reason}", allow_module_level=True)


@pytest.fixture(scope="package")
def slicer_python(tmp_path_factory) -> str:
    """A virtual environment that sees the test environment's packages and installs into itself: Slicer's Python."""
    folder = tmp_path_factory.mktemp("slicer-python") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    bin_folder = tmp_path_factory.mktemp("slicer-bin")
    launcher = bin_folder / "PythonSlicer"  # a script, as Slicer's launcher: a symbolic link would lose the venv
    launcher.write_text(f'#!/bin/sh\nexec "{python}" "$@"\n', encoding="utf-8")
    launcher.chmod(0o755)
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_folder}{os.pathsep}{path}"
    yield str(python)
    os.environ["PATH"] = path


@pytest.fixture(scope="package")
def slicer_app(tmp_path_factory, slicer_python):
    """The harness started and the module loaded, as Slicer does at start-up; stopped (module cleanup) at the end."""
    app = slicer_harness.start(tmp_path_factory.mktemp("slicer-settings"))
    slicer_harness.load_module(MODULE_FILE)
    yield app
    slicer_harness.stop()


@pytest.fixture
def panel(slicer_app):
    """The module's panel entered on a fresh scene, as a user opens it; left (exit) and the scene closed after."""
    import slicer

    module = slicer.util.getModule("MonaiDeployer")
    representation = module.widgetRepresentation()  # the first time: the widget is made and set up
    widget = representation.self()
    representation.enter()
    yield widget
    if widget.isRunning():
        widget.onCancelButton()
        wait_until(lambda: not widget.isRunning(), 30, "the run left running by the test was cancelled")
    wait_until(lambda: not widget.isDescribing() and not widget.isWarmingUp(), 120, "the panel's background work")
    representation.exit()
    slicer.mrmlScene.Clear(0)
