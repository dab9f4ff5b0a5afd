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


def preprocessed_both_ways(pipeline, volume, monkeypatch) -> tuple:
    """(the image from the slab-wise pre-processing, the image from every step as written, slab runs taken)."""
    calls = []
    in_slabs = bundle.run_in_slabs

    def counted(*arguments):
        done = in_slabs(*arguments)
        calls.append(done is not None)
        return done

    monkeypatch.setattr(bundle, "run_in_slabs", counted)
    ours = pipeline._preprocess({pipeline.image_key: bundle._as_loaded_image(volume)})[pipeline.image_key]
    as_written = pipeline._run_transforms(pipeline.preprocessing, {pipeline.image_key: bundle._as_loaded_image(volume)},
                                          "pre")[pipeline.image_key]
    return ours, as_written, sum(calls)


def assert_same_image(ours, as_written, context: str) -> None:
    """Voxels, grid and the operations Invertd will undo (with what they record) as the steps give them."""
    import torch

    assert ours.shape == as_written.shape and ours.dtype == as_written.dtype, context
    assert torch.allclose(ours.affine, as_written.affine, atol=1e-9), context
    assert torch.allclose(ours.as_tensor(), as_written.as_tensor(), atol=1e-4), context  # after intensity scaling
    assert len(ours.applied_operations) == len(as_written.applied_operations), context
    for mine, theirs in zip(ours.applied_operations, as_written.applied_operations, strict=True):
        assert (mine["class"], mine["id"], mine["orig_size"], mine["lazy"]) == \
            (theirs["class"], theirs["id"], theirs["orig_size"], theirs["lazy"]), context
        mine_extra, theirs_extra = mine.get("extra_info", {}), theirs.get("extra_info", {})  # Lambda records none
        assert set(mine_extra) == set(theirs_extra), context
        for key, value in theirs_extra.items():
            if isinstance(value, (torch.Tensor, np.ndarray)):
                assert np.allclose(np.asarray(mine_extra[key]), np.asarray(value), atol=1e-9), (context, key)
            else:
                assert mine_extra[key] == value, (context, key)


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
        image, image_as_written, slab_runs = preprocessed_both_ways(pipeline, volume, monkeypatch)
        assert slab_runs == 1, case["name"]
        assert_same_image(image, image_as_written, case["name"])
        quick, as_written, calls = labels_both_ways(pipeline, volume, monkeypatch)
        assert calls == 1, case["name"]
        assert np.mean(quick == as_written) >= AGREEMENT, (case["name"], np.count_nonzero(quick != as_written))
        assert len(np.unique(as_written)) == 3


@pytest.mark.skipif(not MODEL_ZOO.is_dir(), reason="../shared/model-zoo is not beside the repository")
@pytest.mark.parametrize(("name", "respaces", "taken"), [("spleen_ct_segmentation", True, True),
                                                         ("pancreas_ct_dints_segmentation", True, True),
                                                         ("ventricular_short_axis_3label", False, True),
                                                         ("segmentation_template", False, False)])
def test_model_zoo_configs_get_the_same_image_and_take_the_chain_where_they_have_it(tmp_path, monkeypatch, name,
                                                                                  respaces, taken):
    image, _ = sampledata.render_phantom(SHAPE, oblique_grid(), seed=4242)
    volume = Volume(image, oblique_grid())
    pipeline = pipeline_of(make_zoo_bundle(name, tmp_path / name))
    ours, image_as_written, slab_runs = preprocessed_both_ways(pipeline, volume, monkeypatch)
    assert slab_runs == (1 if respaces else 0)
    assert_same_image(ours, image_as_written, name)
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


def test_a_respacing_that_recomputes_its_affine_runs_as_written(tmp_path, held_out, monkeypatch):
    """MONAI cannot plan ``recompute_affine`` lazily: the steps then run as the bundle wrote them."""
    def recompute(config):
        spacing = next(step for step in config["preprocessing"]["transforms"] if step["_target_"] == "Spacingd")
        spacing["recompute_affine"] = True

    pipeline = pipeline_of(edited_sample_bundle(tmp_path, recompute))
    _, volume, _ = held_out[2]
    ours, image_as_written, slab_runs = preprocessed_both_ways(pipeline, volume, monkeypatch)
    assert slab_runs == 0
    assert_same_image(ours, image_as_written, "recompute_affine")
    assert pipeline.segment(volume, lambda *_: None).labelmap.shape == volume.shape


def test_two_respacings_are_not_undone_as_one(tmp_path, held_out, monkeypatch):
    def respace_twice(config):
        steps = config["preprocessing"]["transforms"]
        at = next(index for index, step in enumerate(steps) if step["_target_"] == "ScaleIntensityRanged")
        steps.insert(at + 1, {"_target_": "Spacingd", "keys": "@image_key", "pixdim": [2.0, 2.0, 2.0],
                              "mode": "bilinear"})

    pipeline = pipeline_of(edited_sample_bundle(tmp_path, respace_twice))
    _, volume, _ = held_out[0]
    ours, image_as_written, slab_runs = preprocessed_both_ways(pipeline, volume, monkeypatch)
    assert slab_runs == 2  # each respacing alone is one resampling
    assert_same_image(ours, image_as_written, "two respacings")
    quick, as_written, calls = labels_both_ways(pipeline, volume, monkeypatch)
    assert calls == 0  # but their inverse is two
    assert np.array_equal(quick, as_written)


def test_an_auto3dseg_style_pipeline_gives_what_its_steps_give_as_written(tmp_path, held_out, monkeypatch):
    """SlicerMONAIAuto3DSeg's transforms, as the benchmark's peer rows run them: a crop to the foreground, a sigmoid,
    a respacing with a pixdim range, SlidingWindowInfererAdapt, argmax and then Invertd with nearest labels."""
    from benchmark_peer import auto3dseg_checkpoint, matching_bundle

    small = {"_target_": "SegResNetDS", "init_filters": 4, "blocks_down": [1, 1, 1], "in_channels": 1,
             "out_channels": 3, "dsdepth": 1}
    pipeline = pipeline_of(matching_bundle(auto3dseg_checkpoint(tmp_path / "model.pt", small, [48, 48, 48]),
                                           tmp_path / "Auto3DSegStyle"))
    assert pipeline.argmax_chain is None  # its argmax comes before Invertd: nothing to take
    _, volume, _ = held_out[0]
    ours, image_as_written, slab_runs = preprocessed_both_ways(pipeline, volume, monkeypatch)
    assert slab_runs == 1  # Orientationd and Spacingd, after the crop and the intensity steps
    assert_same_image(ours, image_as_written, "Auto3DSeg-style")
    quick = pipeline.segment(volume, lambda *_: None).labelmap
    monkeypatch.setattr(bundle, "run_in_slabs", lambda *_: None)  # every step as written
    as_written = pipeline.segment(volume, lambda *_: None).labelmap
    assert quick.shape == volume.shape and len(np.unique(as_written)) > 1
    assert np.mean(quick == as_written) >= AGREEMENT
