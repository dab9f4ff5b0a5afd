"""A bundle at bounded memory: its Orientationd/Spacingd run a slab at a time and its Invertd -> AsDiscreted(argmax)
without full-size class scores give what the bundle's own transforms give run as written at full size (the
reference here), and each is taken only where it is the same computation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from make_zoo_bundle import MODEL_ZOO, make_zoo_bundle
from test_bundle_model_zoo import SHAPE, oblique_grid

from MonaiDeployerLib import Volume, open_package
from MonaiDeployerLib.inference.backends import bundle
from MonaiDeployerLib.testing import sampledata
from MonaiDeployerLib.testing.selftest import SAMPLE_BUNDLE

AGREEMENT = 0.9999  # ties between classes broken by float rounding either way (float32 here, float64 in MONAI's)


def pipeline_of(path):
    import torch

    return bundle.BundlePipeline(open_package(str(path)), torch.device("cpu"))


def labels_both_ways(pipeline, volume, monkeypatch) -> tuple[np.ndarray, np.ndarray, int]:
    """(labels with the chain when it is taken, labels with every step as written, how often the chain ran)."""
    calls = []
    through_chain = bundle.labels_through_chain

    def counted(*arguments):
        calls.append(1)
        return through_chain(*arguments)

    monkeypatch.setattr(bundle, "labels_through_chain", counted)
    quick = pipeline.segment(volume, lambda *_: None).labelmap
    chain, pipeline.argmax_chain = pipeline.argmax_chain, None
    try:
        as_written = pipeline.segment(volume, lambda *_: None).labelmap
    finally:
        pipeline.argmax_chain = chain
    return quick, as_written, len(calls)


def assert_preprocessed_as_written(pipeline, volume, context: str) -> None:
    """The slab-wise pre-processing gives the image (voxels, grid, recorded operations) the steps give as written."""
    import torch

    ours = pipeline._preprocess({pipeline.image_key: bundle._as_loaded_image(volume)})[pipeline.image_key]
    as_written = pipeline._run_transforms(pipeline.preprocessing, {pipeline.image_key: bundle._as_loaded_image(volume)},
                                          "pre")[pipeline.image_key]
    assert ours.shape == as_written.shape and ours.dtype == as_written.dtype, context
    assert torch.allclose(ours.affine, as_written.affine, atol=1e-9), context
    assert torch.allclose(ours.as_tensor(), as_written.as_tensor(), atol=1e-4), context  # after intensity scaling

    def recorded(image):
        return [(step["class"], step["orig_size"], step["lazy"]) for step in image.applied_operations]

    assert recorded(ours) == recorded(as_written), context


def edited_sample_bundle(tmp_path: Path, edit) -> Path:
    folder = Path(shutil.copytree(SAMPLE_BUNDLE, tmp_path / "PhantomBundle"))
    config_path = folder / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    edit(config)
    config_path.write_text(json.dumps(config))
    return folder


def test_the_sample_bundle_gets_the_same_image_and_labels_on_every_held_out_grid(held_out, monkeypatch):
    pipeline = pipeline_of(SAMPLE_BUNDLE)
    assert pipeline.argmax_chain is not None
    for case, volume, _truth in held_out:
        assert_preprocessed_as_written(pipeline, volume, case["name"])
        quick, as_written, calls = labels_both_ways(pipeline, volume, monkeypatch)
        assert calls == 1, case["name"]
        assert np.mean(quick == as_written) >= AGREEMENT, (case["name"], np.count_nonzero(quick != as_written))
        assert len(np.unique(as_written)) == 3


@pytest.mark.skipif(not MODEL_ZOO.is_dir(), reason="../shared/model-zoo is not beside the repository")
@pytest.mark.parametrize(("name", "taken"), [("spleen_ct_segmentation", True), ("pancreas_ct_dints_segmentation", True),
                                             ("ventricular_short_axis_3label", True),
                                             ("segmentation_template", False)])
def test_model_zoo_configs_get_the_same_image_and_take_the_chain_where_they_have_it(tmp_path, monkeypatch, name, taken):
    image, _ = sampledata.render_phantom(SHAPE, oblique_grid(), seed=4242)
    volume = Volume(image, oblique_grid())
    pipeline = pipeline_of(make_zoo_bundle(name, tmp_path / name))
    assert_preprocessed_as_written(pipeline, volume, name)
    quick, as_written, calls = labels_both_ways(pipeline, volume, monkeypatch)
    assert calls == (1 if taken else 0)
    assert np.mean(quick == as_written) >= AGREEMENT


def test_a_respacing_that_pads_with_zeros_runs_as_the_bundle_wrote_it(tmp_path, held_out, monkeypatch):
    def zero_padding(config):
        spacing = next(step for step in config["preprocessing"]["transforms"] if step["_target_"] == "Spacingd")
        spacing["padding_mode"] = "zeros"

    pipeline = pipeline_of(edited_sample_bundle(tmp_path, zero_padding))
    assert pipeline.argmax_chain is not None  # the chain is there, but its inverse is not one border-padded resampling
    _, volume, _ = held_out[0]
    quick, as_written, calls = labels_both_ways(pipeline, volume, monkeypatch)
    assert calls == 0
    assert np.array_equal(quick, as_written)


def test_an_option_on_the_argmax_step_keeps_it_as_written(tmp_path):
    def one_hot(config):
        discrete = next(step for step in config["postprocessing"]["transforms"] if step["_target_"] == "AsDiscreted")
        discrete["to_onehot"] = 3

    assert pipeline_of(edited_sample_bundle(tmp_path, one_hot)).argmax_chain is None


def test_steps_after_the_chain_run_on_its_labels(tmp_path, held_out, monkeypatch):
    def lesion_into_organ(config):
        steps = config["postprocessing"]["transforms"]
        at = next(index for index, step in enumerate(steps) if step["_target_"] == "AsDiscreted")
        steps.insert(at + 1, {"_target_": "Lambdad", "keys": "pred", "func": "$lambda x: torch.where(x == 2, 1, x)"})

    pipeline = pipeline_of(edited_sample_bundle(tmp_path, lesion_into_organ))
    _, volume, _ = held_out[1]
    quick, as_written, calls = labels_both_ways(pipeline, volume, monkeypatch)
    assert calls == 1
    assert np.mean(quick == as_written) >= AGREEMENT
    assert set(np.unique(quick)) == {0, 1}
