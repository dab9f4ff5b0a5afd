"""The TorchScript mode's class scores streamed: MONAI's sliding window handing on finished planes (MONAI's own
``sliding_window_inference`` as the reference, bit for bit), and the working grid's labels built from those
planes keeping scores only at boundaries (the whole scores as the reference, and MONAI's linear resampling
then argmax for the labels on the input grid)."""

from __future__ import annotations

import numpy as np
import pytest
from test_grids_at_bounded_memory import AGREEMENT, geometry, smooth_scores
from todays_pipeline import full_size_reference

from MonaiDeployerLib.inference.backends import boundary_scores
from MonaiDeployerLib.inference.backends import onto_input_grid as onto
from MonaiDeployerLib.inference.backends.sliding_window import blended_planes


def small_network():
    """A real (untrained) convolutional network, 2 channels in, 4 out: deterministic, and its outputs vary."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(2, 5, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv3d(5, 4, 3, padding=1)).eval()


@pytest.mark.parametrize(("shape", "roi_size", "sw_batch_size", "overlap", "mode"), [
    ((40, 33, 29), (16, 16, 16), 1, 0.25, "gaussian"),
    ((40, 33, 29), (16, 12, 20), 3, 0.5, "constant"),  # batches that span two rows of windows
    ((10, 33, 29), (16, 16, 16), 2, 0.25, "gaussian"),  # the first axis shorter than the window: padded
    ((40, 8, 29), (16, 16, 16), 4, 0.6, "gaussian"),
    ((37, 20, 20), (-1, 16, 16), 2, 0.25, "gaussian"),  # a window as long as the axis
    ((9, 13, 29), (16, 16, 16), 2, 0.25, "gaussian"),  # uneven padding: 3 before and 4 after, 1 and 2
    ((9, 13, 11), (16, 16, 16), 1, 0.25, "constant"),  # smaller than the window on every axis: one window
])
def test_the_planes_handed_on_are_monais_sliding_window_bit_for_bit(shape, roi_size, sw_batch_size, overlap, mode):
    import torch
    from monai.inferers import sliding_window_inference

    network, image = small_network(), torch.rand((1, 2, *shape), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = sliding_window_inference(image, roi_size, sw_batch_size, network, overlap=overlap, mode=mode)
        planes = list(blended_planes(image, roi_size, sw_batch_size, network, overlap, mode))
    assert [first for first, _scores in planes] == list(np.cumsum([0] + [len(s[0]) for _f, s in planes])[:-1])
    assert torch.equal(torch.cat([scores for _first, scores in planes], dim=1), reference[0])


def test_planes_are_handed_on_as_soon_as_no_later_window_reaches_them():
    import torch

    network, image = small_network(), torch.rand((1, 2, 40, 20, 20))
    calls = []

    def predictor(windows):
        calls.append(len(windows))
        return network(windows)

    with torch.inference_mode():
        handed = [(first, scores.shape[1], len(calls)) for first, scores in
                  blended_planes(image, (16, 16, 16), 1, predictor, 0.25, "gaussian")]
    # windows start at planes 0, 12 and 24 along the first axis, 4 windows to each row (2 x 2 in the plane);
    # finished planes go on 8 at a time
    assert handed == [(0, 8, 4), (8, 4, 4), (12, 8, 8), (20, 4, 8), (24, 8, 12), (32, 8, 12)]


def blocks_of(scores, sizes):
    """The scores' planes in consecutive blocks of the given sizes (the last one takes the rest)."""
    first = 0
    for size in sizes:
        yield first, scores[:, first:first + size]
        first += size
    if first < scores.shape[1]:
        yield first, scores[:, first:]


def built(scores, sizes, threshold=None, boundaries=True):
    working = boundary_scores.BoundaryScores(scores.shape[1:], threshold, boundaries)
    for first, block in blocks_of(scores, sizes):
        working.add(first, block)
    return working


@pytest.mark.parametrize("name", ["flipped and respaced", "axes swapped", "oblique"])
@pytest.mark.parametrize("classes", [3, 16])
def test_labels_from_planes_are_those_of_the_whole_scores(name, classes):
    import torch

    working, shape, ijk_to_ras = geometry(name)
    scores = smooth_scores(classes, (52, 50, 48), seed=classes)
    streamed = built(scores, [1, 7, 1, 13, 2])
    whole = onto.DenseScores(scores, None)
    assert torch.equal(streamed.labels, whole.labels) and torch.equal(streamed.cells, whole.cells)
    labels = onto.labels_on_input_grid(streamed, working, shape, ijk_to_ras)
    reference = full_size_reference(scores, working, shape, ijk_to_ras)
    assert np.mean(labels == reference) >= AGREEMENT, np.count_nonzero(labels != reference)
    assert np.mean(labels == onto.labels_on_input_grid(scores, working, shape, ijk_to_ras)) >= AGREEMENT


def test_one_channel_from_planes_is_thresholded_after_linear_resampling():
    working, shape, ijk_to_ras = geometry("flipped and respaced")
    scores = smooth_scores(2, (52, 50, 48), seed=5)[1:]
    labels = onto.labels_on_input_grid(built(scores, [30], threshold=0.5), working, shape, ijk_to_ras)
    reference = full_size_reference(scores, working, shape, ijk_to_ras, threshold=0.5)
    assert 0 < reference.mean() < 1
    assert np.mean(labels == reference) >= AGREEMENT


def test_nearest_labels_keep_no_scores():
    working, shape, ijk_to_ras = geometry("oblique")
    scores = smooth_scores(3, (52, 50, 48), seed=3)
    labels_only = built(scores, [6, 1, 20], boundaries=False)
    assert labels_only.kept == 0 and labels_only.cells is None
    nearest = onto.labels_on_input_grid(labels_only, working, shape, ijk_to_ras, interpolation="nearest")
    assert np.array_equal(nearest, onto.labels_on_input_grid(scores, working, shape, ijk_to_ras,
                                                             interpolation="nearest"))


def sphere_scores(classes: int, shape: tuple):
    """Softmax-like scores of nested spheres, one class per shell: few boundaries, as a trained model gives."""
    import torch

    grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1)
    radius = np.linalg.norm(grid - (np.asarray(shape) - 1) / 2, axis=-1)
    shells = np.minimum((radius / (radius.max() / classes)).astype(int), classes - 1)
    scores = np.stack([np.exp(-np.abs(shells - label) - 0.01 * radius) for label in range(classes)]).astype(np.float32)
    return torch.from_numpy(scores / scores.sum(0))


def test_only_the_corners_of_mixed_cells_keep_their_scores():
    scores = sphere_scores(3, (48, 52, 44))
    streamed = built(scores, [9, 9, 9])
    mixed = (onto.cell_labels(onto.labels_of(scores, None)) == onto.MIXED).numpy()
    corners = mixed.copy()
    for axis in range(3):  # a voxel is a corner of the cells from itself back one voxel along each axis
        behind = np.zeros_like(corners)
        behind[tuple(slice(1, None) if a == axis else slice(None) for a in range(3))] = corners[
            tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))]
        corners |= behind
    assert streamed.kept == np.count_nonzero(corners)
    assert 0 < streamed.kept < 0.3 * mixed.size  # two shells' surfaces: a share of the voxels, not all


def test_kept_scores_stored_in_many_chunks_read_the_same(monkeypatch):
    working, shape, ijk_to_ras = geometry("oblique")
    scores = smooth_scores(4, (52, 50, 48), seed=2)
    one_chunk = onto.labels_on_input_grid(built(scores, [5] * 10), working, shape, ijk_to_ras)
    monkeypatch.setattr(boundary_scores, "CHUNK_BYTES", 997 * 4 * 4)  # 997 rows of 4 classes: planes split across
    many = built(scores, [5] * 10)
    assert many._chunk_rows == 997 and many.kept > 100 * 997
    assert np.array_equal(onto.labels_on_input_grid(many, working, shape, ijk_to_ras), one_chunk)
