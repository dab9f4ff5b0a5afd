"""Packages MONAI imports only when a transform runs (scikit-image for KeepLargestConnectedComponentd...):
named as pip installs them, before the run where a bundle's config shows them, else in the error.

The test environment has no scikit-image, so MONAI's own errors are raised for real here and in its
workers. ``prostate_mri_anatomy`` (its Model Zoo configs, unmodified, in Testing/data/model-zoo) runs
in the environment made for it from its metadata and config: MONAI 1.4.0, itk, pandas and scikit-image.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from make_zoo_bundle import COPIED_ZOO, make_zoo_bundle, zoo_configs

from MonaiDeployerLib import PackageError, Runner, Volume, open_package
from MonaiDeployerLib.packages import package_facts
from MonaiDeployerLib.testing import sampledata
from MonaiDeployerLib.testing.selftest import SAMPLE_BUNDLE

PROSTATE = COPIED_ZOO / "prostate_mri_anatomy"
PROSTATE_LABELS = {1: "central gland", 2: "peripheral zone"}
SHAPE = (20, 20, 14)  # about 32 x 28 x 35 mm: one 96-voxel window once the config resamples to 0.5 mm
needs_no_scikit_image = pytest.mark.skipif(importlib.util.find_spec("skimage") is not None,
                                           reason="this Python has scikit-image: MONAI raises nothing to name")


def oblique_grid() -> np.ndarray:
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([-1.6, 1.4, 2.5])
    matrix[:3, 3] = [-15.0, -10.0, 20.0]
    return matrix


@pytest.fixture(scope="module")
def mr_volume() -> Volume:
    image, _ = sampledata.render_phantom(SHAPE, oblique_grid(), seed=4242)
    return Volume(image + 1000.0, oblique_grid())


@needs_no_scikit_image
def test_monais_optional_import_errors_name_the_pip_package():
    """The messages MONAI really raises: ``optional_import``, ``require_pkg`` and the transforms' own."""
    import torch
    from monai.transforms import KeepLargestConnectedComponent
    from monai.utils import OptionalImportError, min_version, optional_import, require_pkg

    from MonaiDeployerLib.environment.optional_packages import missing_package, pip_name

    measure, found = optional_import("skimage.measure", "0.14.2", min_version)
    assert not found
    with pytest.raises(OptionalImportError) as lazy:
        measure.label(np.zeros((2, 2)))
    assert (missing_package(lazy.value).module, missing_package(lazy.value).distribution) == (
        "skimage.measure", "scikit-image")

    @require_pkg(pkg_name="skimage")
    def needs_skimage():
        return None

    with pytest.raises(OptionalImportError, match="required package `skimage`") as required:
        needs_skimage()
    assert missing_package(required.value).distribution == "scikit-image"

    with pytest.raises(RuntimeError, match=r"(?i)skimage\.measure required") as transform:
        KeepLargestConnectedComponent()(torch.tensor([[[1.0, 0.0, 1.0]]]))
    assert missing_package(transform.value).distribution == "scikit-image"

    cv2, _ = optional_import("cv2")
    with pytest.raises(OptionalImportError) as headless:
        cv2.imread("x.png")
    assert missing_package(headless.value).distribution == "opencv-python-headless"
    unknown, _ = optional_import("monaideployer_no_such_module.sub")
    with pytest.raises(OptionalImportError) as not_listed:
        unknown.anything()
    assert missing_package(not_listed.value).distribution == "monaideployer_no_such_module"
    assert missing_package(ValueError("skimage required.")) is None  # only import failures name a package
    assert [pip_name(name) for name in ("PIL.Image", "sklearn", "yaml", "ignite.engine", "nrrd")] == [
        "pillow", "scikit-learn", "PyYAML", "pytorch-ignite", "pynrrd"]


def zip_bundle(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, f"{folder.name}/{path.relative_to(folder)}")
    return target


def torchscript_with_configs(folder: Path, target: Path) -> Path:
    import torch

    configs = folder / "configs"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(target), _extra_files={
        name: (configs / name).read_text() for name in ("metadata.json", "inference.json")})
    return target


@pytest.mark.parametrize("form", ["folder", "zip", "torchscript"])
def test_a_bundle_requires_what_its_config_needs_and_says_which_transform(tmp_path, form):
    """The metadata names itk, nibabel, pandas, pytorch-ignite; KeepLargestConnectedComponentd needs scikit-image."""
    path = {"folder": lambda: PROSTATE, "zip": lambda: zip_bundle(PROSTATE, tmp_path / "prostate.zip"),
            "torchscript": lambda: torchscript_with_configs(PROSTATE, tmp_path / "prostate.ts")}[form]()
    package = open_package(str(path))
    assert package.requirements["scikit-image"] == ""
    assert {"itk", "pandas", "nibabel", "pytorch-ignite", "monai"} <= set(package.requirements)
    assert package.settings.needed_by == {"scikit-image": ["KeepLargestConnectedComponentd"]}
    facts = dict(package_facts(package, trusted=False))
    assert facts["config needs"] == ("scikit-image (KeepLargestConnectedComponentd), which its metadata does not list "
                                     "(MONAI imports it only when that runs)")


def test_inspect_names_the_package_the_config_needs():
    finished = subprocess.run([sys.executable, "-m", "MonaiDeployerLib", "inspect", str(PROSTATE), "--json"],
                              capture_output=True, text=True, cwd=REPO_ROOT / "MonaiDeployer", check=False)
    assert finished.returncode == 0, finished.stderr
    described = json.loads(finished.stdout)
    assert described["requirements"]["scikit-image"] == ""
    assert described["settings"]["needed_by"] == {"scikit-image": ["KeepLargestConnectedComponentd"]}
    if importlib.util.find_spec("skimage") is None:
        assert 'scikit-image is not installed (needs scikit-image; pip install "scikit-image")' in (
            described["requirement_problems"])
    text = subprocess.run([sys.executable, "-m", "MonaiDeployerLib", "inspect", str(PROSTATE)],
                          capture_output=True, text=True, cwd=REPO_ROOT / "MonaiDeployer", check=True).stdout
    assert "  config needs: scikit-image (KeepLargestConnectedComponentd)" in text


@needs_no_scikit_image
def test_a_worker_without_the_package_the_config_needs_is_refused_before_the_run(runner, mr_volume):
    package = open_package(str(PROSTATE))
    refused = r'cannot run in .*scikit-image is not installed \(pip install "scikit-image"\)'
    with pytest.raises(PackageError, match=refused):
        runner.run(package, mr_volume, trust=True)


def bundle_with_own_largest_component(folder: Path) -> Path:
    """The sample bundle whose post-processing ends with a transform of its own scripts/ that is MONAI's
    KeepLargestConnectedComponentd underneath: its config does not show that it needs scikit-image."""
    shutil.copytree(SAMPLE_BUNDLE, folder)
    (folder / "scripts").mkdir()
    (folder / "scripts" / "__init__.py").write_text("")
    (folder / "scripts" / "cleanup.py").write_text(
        "from monai.transforms import KeepLargestConnectedComponentd\n\n\n"
        "class LargestOrgand(KeepLargestConnectedComponentd):\n"
        "    pass\n")
    config_path = folder / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    post = config["postprocessing"]["transforms"]
    saver = next(index for index, transform in enumerate(post) if transform["_target_"] == "SaveImaged")
    post.insert(saver, {"_target_": "scripts.cleanup.LargestOrgand", "keys": "pred", "applied_labels": [1]})
    config_path.write_text(json.dumps(config, indent=2))
    return folder


@needs_no_scikit_image
def test_a_transform_that_needs_a_missing_package_names_it_in_the_error(runner, tmp_path, mr_volume):
    package = open_package(str(bundle_with_own_largest_component(tmp_path / "bundle")))
    assert "scikit-image" not in package.requirements
    with pytest.raises(PackageError) as failed:
        runner.run(package, mr_volume, trust=True)
    message = str(failed.value)
    assert "\n" not in message
    assert re.fullmatch(r"the bundle's postprocessing failed \(LargestOrgand\): it needs scikit-image "
                        r"\(import skimage\.measure\), which the worker Python \S+ lacks: pip install scikit-image",
                        message), message


@pytest.fixture(scope="module")
def prostate_environment():
    """The environment made for prostate_mri_anatomy from its metadata and config (nothing asked for by the test)."""
    from MonaiDeployerLib.environment.made import make_environment

    lines = []
    started = time.perf_counter()
    made = make_environment(open_package(str(PROSTATE)), progress=lines.append)
    print(f"\nmade the prostate_mri_anatomy environment in {time.perf_counter() - started:.0f} s "
          f"(made now: {made.made_now})")
    return made


def test_prostate_mri_anatomy_runs_in_the_environment_made_for_it(tmp_path, mr_volume, prostate_environment):
    assert zoo_configs("prostate_mri_anatomy").is_dir()
    assert "scikit-image" in prostate_environment.requirements and "monai==1.4.0" in prostate_environment.requirements
    bundle = make_zoo_bundle("prostate_mri_anatomy", tmp_path / "prostate", prostate_environment.python)
    package = open_package(str(bundle))
    with Runner(python=prostate_environment.python, device="cpu") as made:
        installed = made.environment()["packages"]
        assert installed["monai"] == "1.4.0" and "scikit-image" in installed
        assert made.check_requirements(package) == []
        result = made.run(package, mr_volume, trust=True)
    assert result.labelmap.shape == mr_volume.shape
    assert np.allclose(result.labelmap.ijk_to_ras, mr_volume.ijk_to_ras)
    assert result.labels == PROSTATE_LABELS == package.labels
    values = set(np.unique(result.labelmap.array).tolist())
    assert values <= {0, 1, 2}
    assert {1, 2} <= values, "at this seed the random network labels both; its bilinear Invertd must not lose 2"


def test_label_values_a_bundle_interpolated_round_to_the_nearest_label(runner, tmp_path):
    """prostate_mri_anatomy inverts its resampling bilinearly after argmax: labels 0, 1, 2 come back as fractions
    between them. They round to the nearest label (a threshold at 0.5 would make every 2 a 1)."""
    import torch

    folder = tmp_path / "interpolated"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "metadata.json").write_text(json.dumps({"name": "interpolated", "version": "0.1"}))
    (folder / "configs" / "inference.json").write_text(json.dumps({
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"}, {"_target_": "EnsureChannelFirstd", "keys": "image"}]},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": []}}))
    torch.jit.script(torch.nn.Identity()).save(str(folder / "models" / "model.ts"))
    values = np.array([0.0, 0.3, 0.8, 1.2, 1.4, 1.6, 2.0, 1.0], np.float32).reshape(2, 2, 2)
    result = runner.run(open_package(str(folder)), Volume(values), trust=True)
    assert result.labelmap.array.ravel().tolist() == [0, 0, 1, 1, 1, 2, 2, 1]
