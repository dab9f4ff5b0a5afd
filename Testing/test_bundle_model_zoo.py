"""Every Model Zoo config in ../shared/model-zoo that segments a volume runs unmodified, weights made by the test.

The volumes are small CT/MR-like phantoms on an oblique grid; each result must lie on the input grid
and carry the bundle's label names. SwinUNETR's config needs MONAI 1.4 (its ``img_size`` argument is
gone in later releases): it runs in the environment made for it from its metadata (monai 1.4.0),
and in the main environment it fails with an error that says so.
"""

from __future__ import annotations

import numpy as np
import pytest
from make_zoo_bundle import MODEL_ZOO, make_zoo_bundle

from MonaiDeployerLib import PackageError, Runner, Volume, open_package
from MonaiDeployerLib.testing import sampledata

pytestmark = pytest.mark.skipif(not MODEL_ZOO.is_dir(), reason="../shared/model-zoo is not beside the repository")

SHAPE = (48, 48, 32)  # the template bundle's UNet without sliding window needs sides divisible by 8
OLD_MONAI = "1.4.0"


def oblique_grid() -> np.ndarray:
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([-1.6, 1.4, 2.5])  # left-handed in i, as LPS-stored data often is
    matrix[:3, 3] = [35.0, -60.0, 12.0]
    return matrix


@pytest.fixture(scope="module")
def ct_volume() -> Volume:
    image, _ = sampledata.render_phantom(SHAPE, oblique_grid(), seed=4242)
    return Volume(image, oblique_grid())


@pytest.fixture(scope="module")
def mr_channels(ct_volume) -> Volume:
    """Four MR-like channels (T1c, T1, T2, FLAIR) on one grid, channel last."""
    rng = np.random.default_rng(7)
    base = ct_volume.array + 1000.0
    channels = [base * gain + rng.normal(0, 20, SHAPE) for gain in (1.0, 0.8, 1.3, 0.9)]
    return Volume(np.stack(channels, axis=-1).astype(np.float32), ct_volume.ijk_to_ras)


@pytest.fixture(scope="module")
def old_monai_python() -> str:
    """The environment made for SwinUNETR from its metadata: monai 1.4.0 over the test environment's packages."""
    from MonaiDeployerLib.environment.made import make_environment

    return make_environment(open_package(str(MODEL_ZOO / "swin_unetr_btcv_segmentation"))).python


def assert_on_grid_with_labels(result, volume, package) -> None:
    assert result.labelmap.shape[:3] == volume.shape[:3]
    assert np.allclose(result.labelmap.ijk_to_ras, volume.ijk_to_ras)
    assert result.labels == package.labels
    values = set(np.unique(result.labelmap.array).tolist())
    assert values <= {0, *package.labels}


@pytest.mark.parametrize("name", ["spleen_ct_segmentation", "segmentation_template",
                                  "ventricular_short_axis_3label", "pancreas_ct_dints_segmentation"])
def test_model_zoo_bundle_runs_unmodified_on_the_input_grid(runner, tmp_path, ct_volume, name):
    package = open_package(make_zoo_bundle(name, tmp_path / name))
    result = runner.run(package, ct_volume, trust=True)
    assert_on_grid_with_labels(result, ct_volume, package)
    assert len(np.unique(result.labelmap.array)) > 1, "random weights still label more than one class"


def test_a_config_that_hard_codes_cuda_runs_on_the_users_device(runner, tmp_path, ct_volume):
    """DiNTS loads its architecture with map_location=torch.device('cuda') and builds its space on 'cuda'."""
    text = (MODEL_ZOO / "pancreas_ct_dints_segmentation" / "configs" / "inference.yaml").read_text()
    assert "torch.device('cuda')" in text
    package = open_package(make_zoo_bundle("pancreas_ct_dints_segmentation", tmp_path / "dints"))
    assert runner.run(package, ct_volume, trust=True).labelmap.shape == ct_volume.shape


def test_overlapping_sigmoid_channels_become_one_mask_per_channel(runner, tmp_path, mr_channels):
    package = open_package(make_zoo_bundle("brats_mri_segmentation", tmp_path / "brats"))
    result = runner.run(package, mr_channels, trust=True)
    assert result.overlapping
    assert result.labelmap.shape == (*SHAPE, 3)
    assert result.labels == {1: "Tumor core", 2: "Whole tumor", 3: "Enhancing tumor"}
    assert set(np.unique(result.labelmap.array).tolist()) <= {0, 1}


def test_a_bundle_taking_four_channels_names_them_when_given_one(runner, tmp_path, ct_volume):
    package = open_package(make_zoo_bundle("brats_mri_segmentation", tmp_path / "brats"))
    with pytest.raises(Exception, match=r"takes 4 input channels \(T1c, T1, T2, FLAIR\); the input has 1"):
        runner.run(package, ct_volume, trust=True)


def test_swin_unetr_runs_in_a_worker_with_the_monai_it_was_made_for(tmp_path, ct_volume, old_monai_python):
    package = open_package(make_zoo_bundle("swin_unetr_btcv_segmentation", tmp_path / "swin", old_monai_python))
    with Runner(python=old_monai_python, device="cpu") as old:
        assert old.environment()["packages"]["monai"] == OLD_MONAI
        result = old.run(package, ct_volume, trust=True)
    assert_on_grid_with_labels(result, ct_volume, package)
    assert len(result.labels) == 13 and result.labels[6] == "Liver"


def test_swin_unetr_in_a_newer_monai_fails_with_the_release_it_needs(runner, tmp_path, ct_volume, old_monai_python):
    package = open_package(make_zoo_bundle("swin_unetr_btcv_segmentation", tmp_path / "swin", old_monai_python))
    with pytest.raises(PackageError, match=r"'network_def' cannot be built: .*img_size.* made with MONAI 1\.4\.0, "
                                           r"this worker has 1\.6\.\d+: a worker Python with monai==1\.4\.0 may"):
        runner.run(package, ct_volume, trust=True)
