"""Package detection, the TorchScript sidecar and requirement checks: what ``inspect`` and the panel show."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from MonaiDeployerLib import PackageError, open_package
from MonaiDeployerLib.environment.requirements import check_requirements
from MonaiDeployerLib.packages import detect_mode


def test_sample_model_is_described_by_its_sidecar(sample_model):
    package = open_package(sample_model)
    assert package.mode == "torchscript"
    assert package.name == "Phantom organ and lesion (tiny UNet)"
    assert package.labels == {1: "organ", 2: "lesion"}
    assert set(package.colors) == {1, 2}
    assert package.settings.input.spacing == [1.5, 1.5, 1.5]
    assert package.settings.inference.roi_size == [64, 64, 64]
    assert package.requirements["torch"].startswith(">=")


def test_without_sidecar_the_documented_defaults_apply(tiny_models):
    package = open_package(tiny_models["identity"])
    assert package.name == "identity"
    assert package.labels == {}
    assert package.sidecar == ""
    assert package.settings.input.to_dict() == {"channels": None, "orientation": None, "spacing": None,
                                                "intensity": None, "crop_foreground": None}
    assert package.settings.inference.roi_size is None
    assert package.settings.output.to_dict() == {"activation": "none", "threshold": 0.5, "interpolation": "linear"}


def test_modes_are_detected_from_what_is_on_disk(tmp_path, tiny_models):
    bundle = tmp_path / "spleen_bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text('{"name": "Spleen", "version": "0.5.0"}')
    with zipfile.ZipFile(tmp_path / "spleen_bundle.zip", "w") as archive:
        archive.write(bundle / "configs" / "metadata.json", "spleen_bundle/configs/metadata.json")
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("print('app')\n")
    assert detect_mode(tiny_models["identity"]) == "torchscript"
    assert detect_mode(str(bundle)) == "bundle"
    assert detect_mode(str(tmp_path / "spleen_bundle.zip")) == "bundle"
    assert detect_mode(str(app)) == "deploy"
    assert detect_mode(str(app / "app.py")) == "deploy"
    assert detect_mode("ghcr.io/example/spleen-map:1.0") == "map"
    assert open_package(str(bundle)).name == "Spleen"


@pytest.mark.parametrize(("make", "cause"), [
    (lambda folder, model: str(folder / "missing.ts"), "model package not found"),
    (lambda folder, model: _write(folder / "notes.ts", b"just some text"), "is not a model file"),
    (lambda folder, model: _write(folder / "cut.zip", _first_half(model)), "is a corrupt zip file"),
    (lambda folder, model: _checkpoint(folder / "weights.pt"), "is a PyTorch checkpoint"),
    (lambda folder, model: str(folder), "is not a model package"),
])
def test_bad_packages_are_refused_with_the_cause(tmp_path, tiny_models, make, cause):
    with pytest.raises(PackageError, match=cause) as raised:
        open_package(make(tmp_path, tiny_models["two_classes"]))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("sidecar", "cause"), [
    ("{not json", "is not valid JSON"),
    ('{"inputs": {}}', "unknown key 'inputs'"),
    ('{"output": {"activation": "relu"}}', "output.activation must be one of"),
    ('{"input": {"spacing": [1, 1]}}', "input.spacing must be 3 positive numbers"),
    ('{"inference": {"roi_size": [64, 64]}}', "roi_size must be 3 positive whole numbers"),
    ('{"labels": {"1": {"name": "organ", "color": [255, 0, 0]}}}', "color must be 3 numbers from 0 to 1"),
    ('{"labels": {"0": "background"}}', "0 is the background"),
])
def test_sidecar_mistakes_are_named(tmp_path, tiny_models, sidecar, cause):
    model = tmp_path / "model.ts"
    shutil.copy(tiny_models["identity"], model)
    (tmp_path / "model.json").write_text(sidecar)
    with pytest.raises(PackageError, match=cause):
        open_package(str(model))


def test_mode_override_cannot_turn_a_file_into_an_image(tiny_models):
    with pytest.raises(PackageError, match="cannot run in map mode"):
        open_package(tiny_models["identity"], mode="map")


def test_requirements_are_checked_with_the_fix():
    installed = {"torch": "2.13.0+cpu", "monai": "1.3.0"}
    problems = check_requirements({"torch": ">=2.0", "monai": ">=1.4", "nibabel": ">=5"}, installed)
    assert problems == [
        'monai 1.3.0 is installed; the package needs monai>=1.4 (pip install "monai>=1.4")',
        'nibabel is not installed (needs nibabel>=5; pip install "nibabel>=5")',
    ]


def _write(path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def _first_half(path) -> bytes:
    with open(path, "rb") as stream:
        content = stream.read()
    return content[: len(content) // 2]


def _checkpoint(path) -> str:
    import torch

    torch.save({"weight": torch.zeros(2)}, path)
    return str(path)


def test_sidecar_labels_accept_plain_names(tmp_path, tiny_models):
    model = tmp_path / "model.ts"
    shutil.copy(tiny_models["identity"], model)
    (tmp_path / "model.json").write_text(json.dumps({"labels": {"1": "spleen"}}))
    assert open_package(str(model)).labels == {1: "spleen"}
