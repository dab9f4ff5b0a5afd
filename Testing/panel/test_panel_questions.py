"""The questions before a run, asked in Slicer's own dialogs and answered here as a user would click them."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import zipfile

import pytest
from slicer_harness.events import DialogAnswerer

from MonaiDeployerLib.testing import sampledata
from MonaiDeployerLib.testing.selftest import held_out_node

from .conftest import SAMPLE_BUNDLE, SAMPLE_MODEL
from .test_panel_binds import card_text
from .test_panel_runs import apply_and_wait, choose, scene_nodes

PROBE = "monaideployer-probe"


def phantom():
    import slicer

    return held_out_node(slicer.mrmlScene, sampledata.held_out_cases()[0])[0]


def answering(*answers):
    """Answer the dialogs in order with these button texts."""
    queue = list(answers)
    return DialogAnswerer(lambda dialog: queue.pop(0))


def refuse(panel, question: str, status: str) -> None:
    """Apply and answer No: asked once, not started, and the scene is as it was."""
    before = scene_nodes()
    with answering("No") as refused:
        apply_and_wait(panel)
    assert len(refused.asked) == 1 and question in refused.asked[0]
    assert panel.ui.stageLabel.text == status
    assert scene_nodes() == before


def test_trust_is_asked_before_a_bundle_runs_and_remembered_once_given(panel, tmp_path):
    bundle = shutil.copytree(SAMPLE_BUNDLE, tmp_path / "bundle")
    metadata = bundle / "configs" / "metadata.json"
    metadata.write_text(metadata.read_text(encoding="utf-8").replace("}", ', "note": "a copy"}', 1), encoding="utf-8")
    choose(panel, phantom(), bundle)
    refuse(panel, "its configs or code are Python that will run", "Not started: the package is not trusted.")
    with answering("Yes") as trusted:
        apply_and_wait(panel)
    assert len(trusted.asked) == 1 and panel.ui.stageLabel.text.startswith("Created ")
    with answering() as again:
        apply_and_wait(panel)
    assert again.asked == [] and panel.ui.stageLabel.text.startswith("Created ")


def probe_wheel(folder) -> str:
    """A pure-Python wheel of a package nobody has, so installing it needs no network."""
    name, version = PROBE.replace("-", "_"), "1.0"
    files = {f"{name}/__init__.py": b"VERSION = '1.0'\n",
             f"{name}-{version}.dist-info/METADATA":
                 f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: {version}\n".encode(),
             f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  b"Tag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in files.items()) + f"{name}-{version}.dist-info/RECORD,,\n"
    files[f"{name}-{version}.dist-info/RECORD"] = record.encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, data in files.items():
            wheel.writestr(member, data)
    return str(folder)


def model_needing_the_probe(folder, monkeypatch):
    """The sample model, its sidecar asking for the probe, which pip can install from ``folder`` only."""
    model = folder / "NeedsProbe.ts"
    shutil.copy(SAMPLE_MODEL, model)
    sidecar = json.loads(SAMPLE_MODEL.with_suffix(".json").read_text(encoding="utf-8"))
    sidecar["requirements"] = {"torch": ">=1.6", PROBE: ">=1.0"}
    model.with_suffix(".json").write_text(json.dumps(sidecar), encoding="utf-8")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", probe_wheel(folder))
    return model


def probe_installed(python: str) -> bool:
    import subprocess

    return subprocess.run([python, "-c", f"import {PROBE.replace('-', '_')}"], capture_output=True).returncode == 0


def test_in_testing_mode_nothing_is_installed(panel, tmp_path, monkeypatch, slicer_app, slicer_python):
    """Slicer's build machines run the self-test with --testing: no question is shown and nothing is installed."""
    choose(panel, phantom(), model_needing_the_probe(tmp_path, monkeypatch))
    slicer_app.setTestingEnabled(True)
    try:
        with answering() as dialogs:
            apply_and_wait(panel)
    finally:
        slicer_app.setTestingEnabled(False)
    assert dialogs.asked == []
    assert panel.ui.stageLabel.text == f"Failed: {PROBE}>=1.0 not installed, so the model cannot run."
    assert not probe_installed(slicer_python)
    panel._ensurePreflight().declined.clear()  # the next test asks afresh, as after restarting Slicer


def test_install_is_asked_declining_is_remembered_and_agreeing_installs_into_slicers_python(
        panel, tmp_path, monkeypatch, slicer_python):
    import subprocess

    choose(panel, phantom(), model_needing_the_probe(tmp_path, monkeypatch))
    assert "missing" in card_text(panel)

    with answering("Cancel") as declined:
        apply_and_wait(panel)
    assert len(declined.asked) == 1 and f"The model needs {PROBE}>=1.0" in declined.asked[0]
    assert panel.ui.stageLabel.text == f"Failed: {PROBE}>=1.0 not installed, so the model cannot run."
    with answering() as not_again:
        apply_and_wait(panel)
    assert not_again.asked == []
    assert "(you declined)" in panel.ui.stageLabel.text
    assert not probe_installed(slicer_python)

    panel._ensurePreflight().declined.clear()  # as after restarting Slicer
    with answering("OK") as agreed:
        apply_and_wait(panel)
    assert len(agreed.asked) == 1
    assert panel.ui.stageLabel.text.startswith("Created "), panel.ui.logTextEdit.toPlainText()
    assert f"Installed {PROBE}>=1.0." in panel.ui.logTextEdit.toPlainText()
    found = subprocess.run([slicer_python, "-c", f"import {PROBE.replace('-', '_')} as m; print(m.__file__)"],
                           capture_output=True, text=True, check=True).stdout
    assert "slicer-python" in found  # installed into Slicer's Python, not the test environment


@pytest.fixture(scope="module")
def podman_images():
    from test_maps import BASE_IMAGE, podman_ready

    if not podman_ready():
        pytest.skip("podman or the test base image is missing (run Testing/setup_containers.sh)")
    return BASE_IMAGE


def test_an_image_that_is_not_a_map_asks_before_its_entry_point_runs(panel, podman_images):
    choose(panel, phantom(), podman_images, card="This image is not a MONAI Application Package.")
    refuse(panel, "Run the image's own entry point anyway?",
           "Not started: the image is not a MONAI Application Package.")
