"""The library's house: each package kind is one object asked for what it knows, settings are typed, one job
concept serves the worker client, the API and the Slicer node run, and the library logs where users read."""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from MonaiDeployerLib import Cancelled, PackageError, Runner, Volume, WorkerError, open_package
from MonaiDeployerLib.packages import KINDS, MODES, PackageInfo, kind_named, package_facts
from MonaiDeployerLib.packages.bundle import BundleSettings
from MonaiDeployerLib.packages.deployapp import DeploySettings
from MonaiDeployerLib.packages.map import MapSettings
from MonaiDeployerLib.packages.sidecar import TorchScriptSettings
from MonaiDeployerLib.runs.batch import Batch
from MonaiDeployerLib.scene.nodebatch import NodeBatch
from MonaiDeployerLib.scene.noderun import NodeSegmentation
from MonaiDeployerLib.testing.selftest import SAMPLE_BUNDLE, SAMPLE_MODEL
from MonaiDeployerLib.transport.client import WorkerClient
from MonaiDeployerLib.transport.job import Job

REPO_ROOT = Path(__file__).resolve().parents[1]
LIBRARY = REPO_ROOT / "MonaiDeployer" / "MonaiDeployerLib"
DEPLOY_APP = REPO_ROOT / "Testing" / "deploy_apps" / "phantom_nifti"
IMAGE = "ghcr.io/example/spleen-map:1.0"
# Where a kind's knowledge lives: its module under packages/, the files it reads, its backend.
KIND_MODULES = {"packages/torchscript.py", "packages/sidecar.py", "packages/bundle.py", "packages/bundle_files.py",
                "packages/deployapp.py", "packages/deployapp_files.py", "packages/map.py", "packages/map_image.py",
                "packages/map_build.py", "inference/backends/torchscript.py", "inference/backends/bundle.py",
                "inference/backends/bundle_config.py", "inference/backends/deploy.py", "inference/backends/map.py"}


@pytest.fixture(scope="module")
def packages_of_each_kind(tmp_path_factory) -> dict:
    """A real package of every form each kind takes: {location: mode}."""
    import torch

    folder = tmp_path_factory.mktemp("kinds")
    bundle_zip = folder / "bundle.zip"
    with zipfile.ZipFile(bundle_zip, "w") as archive:
        for path in Path(SAMPLE_BUNDLE).rglob("*"):
            if path.is_file():
                archive.write(path, f"PhantomBundle/{path.relative_to(SAMPLE_BUNDLE).as_posix()}")
    exported = folder / "exported.ts"
    configs = Path(SAMPLE_BUNDLE) / "configs"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(exported), _extra_files={
        name: (configs / name).read_text() for name in ("metadata.json", "inference.json")})
    return {SAMPLE_MODEL: "torchscript", SAMPLE_BUNDLE: "bundle", str(bundle_zip): "bundle", str(exported): "bundle",
            str(DEPLOY_APP): "deploy", str(DEPLOY_APP / "app.py"): "deploy", IMAGE: "map"}


def test_exactly_one_kind_accepts_each_package(packages_of_each_kind):
    for location, mode in packages_of_each_kind.items():
        assert [kind.mode for kind in KINDS if kind.accept(location)] == [mode], location
    assert MODES == ("torchscript", "bundle", "deploy", "map")
    assert kind_named("bundle") is KINDS[1]
    with pytest.raises(PackageError, match=r"unknown mode 'onnx' \(use auto, torchscript, bundle, deploy, map\)"):
        kind_named("onnx")


def test_no_kind_accepts_what_is_not_a_package_and_the_error_says_what_it_is(tmp_path):
    checkpoint = tmp_path / "weights.pt"
    with zipfile.ZipFile(checkpoint, "w") as archive:
        archive.writestr("weights/data.pkl", b"")
    (tmp_path / "notes.txt").write_text("not a model")
    cases = {str(checkpoint): r"is a PyTorch checkpoint \(torch.save\), not TorchScript",
             str(tmp_path / "notes.txt"): "is not a model file: expected a TorchScript file",
             str(tmp_path): "is not a model package: no configs/ folder",
             str(tmp_path / "missing.ts"): "model package not found"}
    for location, message in cases.items():
        assert not any(kind.accept(location) for kind in KINDS), location
        with pytest.raises(PackageError, match=message):
            open_package(location)


def test_each_kind_has_typed_settings_that_travel_to_the_worker_unchanged(packages_of_each_kind):
    types = {"torchscript": TorchScriptSettings, "bundle": BundleSettings, "deploy": DeploySettings,
             "map": MapSettings}
    for location, mode in packages_of_each_kind.items():
        package = open_package(location, model=SAMPLE_MODEL)  # the model a Deploy app gets with -m
        assert type(package.settings) is types[mode] is package.kind.settings_type, location
        document = json.loads(json.dumps(package.to_dict()))  # as the worker receives it
        assert PackageInfo.from_dict(document) == package, location


def test_settings_are_checked_where_the_package_is_opened():
    with pytest.raises(PackageError, match=r"unknown launch 'lukewarm' \(use warm or cold\)"):
        open_package(DEPLOY_APP, launch="lukewarm")
    with pytest.raises(PackageError, match=r"unknown input format 'png' \(use nifti or dicom\)"):
        open_package(DEPLOY_APP, input_format="png")
    with pytest.raises(PackageError, match=r"unknown container runtime 'lxc' \(use podman or docker\)"):
        open_package(IMAGE, runtime="lxc")
    with pytest.raises(PackageError, match="unknown BundleSettings settings: channel"):
        BundleSettings.from_dict({"form": "folder", "channel": 2})


def test_a_torchscript_models_channels_are_a_fact_as_a_bundles_are(tmp_path):
    model = tmp_path / "two.ts"
    shutil.copyfile(SAMPLE_MODEL, model)
    (tmp_path / "two.json").write_text(json.dumps({"input": {"channels": 2}}))
    package = open_package(model)
    assert package.settings.channels == 2
    assert ("input", "2 channels (unnamed), in this order: a vector volume, or one volume per channel on one grid") \
        in package_facts(package, trusted=False)
    finished = subprocess.run([sys.executable, "-m", "MonaiDeployerLib", "inspect", str(model), "--python",
                               sys.executable], capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(LIBRARY.parent)}, timeout=120)
    assert "  input:        2 channels (unnamed)" in finished.stdout, finished.stdout + finished.stderr


def _mode_names_compared(tree: ast.AST) -> list:
    """Lines where a string naming a mode is compared or used as a dict key (a branch on the kind)."""
    def names_a_mode(node) -> bool:
        if isinstance(node, ast.Constant) and node.value in MODES:
            return True
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(names_a_mode(item) for item in node.elts)

    def branches(node) -> bool:
        if isinstance(node, ast.Compare):
            return any(names_a_mode(side) for side in [node.left, *node.comparators])
        if isinstance(node, ast.Dict):
            return any(key is not None and names_a_mode(key) for key in node.keys)
        return isinstance(node, ast.Subscript) and names_a_mode(node.slice)

    found = [node.lineno for node in ast.walk(tree) if branches(node)]
    return found


def test_outside_the_kinds_own_modules_no_code_branches_on_a_mode_name():
    modules = [path for path in LIBRARY.rglob("*.py") if path.relative_to(LIBRARY).as_posix() not in KIND_MODULES]
    modules.append(LIBRARY.parent / "MonaiDeployer.py")
    branches = {str(path.relative_to(LIBRARY.parent)): lines for path in modules
                if (lines := _mode_names_compared(ast.parse(path.read_text(), str(path))))}
    assert branches == {}


def test_one_job_class_with_one_signature():
    """The worker client's calls, the API's runs and the Slicer node runs are Jobs; nothing else in the library
    defines a job's methods again but a batch, which polls and cancels the Jobs of its cases (and its panel form,
    a Batch whose rows are nodes, as a NodeSegmentation is a Job whose result is a node). A run on a server is a Job
    too, following a request that stops the run there."""
    assert list(inspect.signature(Job.wait).parameters) == ["self", "timeout", "progress", "cancel"]
    assert inspect.signature(Job.wait).parameters["timeout"].default is None
    defining = []
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
                if methods & {"poll", "wait", "cancel"}:
                    defining.append(f"{path.relative_to(LIBRARY).as_posix()}:{node.name}")
    assert sorted(defining) == ["runs/batch.py:Batch", "scene/nodebatch.py:NodeBatch", "transport/job.py:Job"]
    assert issubclass(NodeBatch, Batch)
    assert issubclass(NodeSegmentation, Job)


def test_a_worker_call_is_a_job_whose_error_comes_back_as_one_event():
    client = WorkerClient()
    try:
        job = client.call("transmogrify")
        assert isinstance(job, Job)
        events = []
        with pytest.raises(Exception, match="unknown worker operation 'transmogrify'"):
            job.wait(timeout=60, progress=events.append)
        assert job.done and [event.kind for event in events if event.kind != "log"] == ["error"]
        assert client.alive  # an error answer is not a crash: the worker goes on
    finally:
        client.close()


def test_a_runs_steps_run_in_order_after_the_answer_and_never_after_a_cancel(runner, tiny_models):
    volume = Volume(np.random.default_rng(0).random((8, 8, 8), dtype=np.float32))
    seen = []
    job = runner.submit(open_package(tiny_models["two_classes"]), volume)
    job.then(lambda result: seen.append(("labels", result.labels)) or "next", "checking").then(seen.append, "last")
    ended = []
    job.on_end(lambda: ended.append(True))
    assert job.wait() is None and job.error is None
    assert seen == [("labels", {1: "label_1"}), "next"] and ended == [True]

    with Runner(device="cpu") as local:  # a cancel kills the worker: not the session's warm one
        job = local.submit(open_package(tiny_models["two_classes"]), volume)
        job.then(seen.append, "never")
        job.on_cancel(lambda: ended.append("stopped"))
        job.cancel()
        assert not local.client.alive
    assert isinstance(job.error, Cancelled) and job.done and len(seen) == 2
    assert ended == [True, "stopped"] and job.poll() == []
    with pytest.raises(Cancelled, match="cancelled by the user while"):
        job.wait()


def test_a_step_that_fails_ends_the_job_with_its_error_and_cleans_up(runner, tiny_models):
    volume = Volume(np.zeros((8, 8, 8), np.float32))
    job = runner.submit(open_package(tiny_models["identity"]), volume)

    def broken(result):
        raise ValueError("no such segment")

    job.then(broken, "placing the output")
    with pytest.raises(WorkerError, match="placing the output failed: ValueError: no such segment"):
        job.wait(timeout=120)


def test_the_command_line_prints_the_librarys_log_when_verbose(tmp_path, held_out):
    from MonaiDeployerLib import write_volume

    source = tmp_path / "in.nii.gz"
    write_volume(source, held_out[0][1])
    environment = {**os.environ, "PYTHONPATH": str(LIBRARY.parent)}
    command = [sys.executable, "-m", "MonaiDeployerLib", "run", SAMPLE_MODEL, str(source), str(tmp_path / "seg.nrrd")]
    quiet = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300, check=False)
    verbose = subprocess.run([*command, "--verbose"], capture_output=True, text=True, env=environment, timeout=300,
                             check=False)
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert "Started a worker in" not in quiet.stderr
    assert f"INFO MonaiDeployerLib.transport.client: Started a worker in {sys.executable}" in verbose.stderr
    assert "DEBUG MonaiDeployerLib.packages.registry: Opened" in verbose.stderr


def test_what_progress_raises_stops_the_run_and_leaves_nothing(tiny_models):
    volume = Volume(np.zeros((8, 8, 8), np.float32))

    def impatient(event):
        raise KeyboardInterrupt

    with Runner(device="cpu") as local:
        job = local.submit(open_package(tiny_models["identity"]), volume)
        with pytest.raises(KeyboardInterrupt):
            job.wait(progress=impatient)
        assert isinstance(job.error, Cancelled) and not local.client.alive
        assert local.run(tiny_models["identity"], volume).labels == {1: "label_1"}  # the runner goes on
