"""The demo: segment a sample CT-like volume with the sample TorchScript package in a real MRML scene.

    ./Testing/run_demo.sh

It builds the sample package if it is missing, writes a held-out phantom as NRRD, loads it with
Slicer's own reader into a slicer-core scene, runs it twice through the module's node logic (a
cold worker, then a warm one), saves the labelmap with Slicer's writer, prints Dice and timings,
and draws the overlay to ``.build/demo/overlay.png``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "MonaiDeployer"))
OUTPUT = REPO_ROOT / ".build" / "demo"

import numpy as np  # noqa: E402
import slicer  # noqa: E402

from MonaiDeployerLib import Runner, Volume, open_package, write_volume  # noqa: E402
from MonaiDeployerLib.scene import mrml  # noqa: E402
from MonaiDeployerLib.scene.noderun import NodeSegmentation  # noqa: E402
from MonaiDeployerLib.testing import sampledata  # noqa: E402
from MonaiDeployerLib.testing.selftest import SAMPLE_MODEL, dice_per_label, node_array  # noqa: E402


def ensure_sample_package() -> None:
    if not Path(SAMPLE_MODEL).is_file():
        print("building the sample package (trains a tiny UNet, about a minute)...")
        subprocess.run([sys.executable, str(REPO_ROOT / "Testing" / "make_sample_model.py")], check=True)


def load_with_slicer(scene, path: Path):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", path.name.split(".")[0])
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise SystemExit(f"Slicer could not read {path}")
    return node


def save_with_slicer(scene, node, path: Path) -> None:
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise SystemExit(f"Slicer could not write {path}")


def draw_overlay(volume: Volume, labels: np.ndarray, colors: dict, title: str, path: Path) -> None:
    """Three orthogonal slices through the labels' centre, drawn with the voxels' true proportions."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    image, spacing = volume.array, volume.spacing
    centre = [int(np.mean(axis)) for axis in np.nonzero(labels)]
    views = [("axial", image[:, :, centre[2]], labels[:, :, centre[2]], spacing[1] / spacing[0]),
             ("coronal", image[:, centre[1], :], labels[:, centre[1], :], spacing[2] / spacing[0]),
             ("sagittal", image[centre[0], :, :], labels[centre[0], :, :], spacing[2] / spacing[1])]
    figure, axes = pyplot.subplots(1, 3, figsize=(12, 4.4))
    for axis, (name, slice_image, slice_labels, aspect) in zip(axes, views, strict=True):
        axis.imshow(slice_image.T, cmap="gray", vmin=-200, vmax=300, origin="lower", aspect=aspect)
        overlay = np.zeros((*slice_labels.T.shape, 4))
        for value, color in colors.items():
            overlay[value == slice_labels.T] = (*color, 0.45)
        axis.imshow(overlay, origin="lower", aspect=aspect)
        axis.set_title(f"{name} (voxel axes)")
        axis.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def main() -> int:
    ensure_sample_package()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    case = next(case for case in sampledata.held_out_cases() if case["name"] == "lps-like")
    image, truth = sampledata.render_phantom(case["shape"], case["ijk_to_ras"], case["seed"])
    source = Path(write_volume(OUTPUT / "phantom-ct.nrrd", Volume(image, case["ijk_to_ras"])))
    print(f"sample volume: {source} ({'x'.join(map(str, case['shape']))} voxels, "
          f"spacing {np.round(Volume(image, case['ijk_to_ras']).spacing, 2).tolist()} mm, LPS-like axes)")

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    input_node = load_with_slicer(scene, source)
    package = open_package(SAMPLE_MODEL)
    print(f"package: {package.name} {package.version} ({package.mode}); labels {package.labels}")
    with Runner() as runner:
        for attempt in ("cold", "warm"):
            run = NodeSegmentation(runner, package, input_node, output_kind="labelmap", name=f"segmentation {attempt}")
            output = run.wait()
            timings = ", ".join(f"{stage} {seconds:.3f} s" for stage, seconds in run.timings.items())
            print(f"{attempt} run: {timings}")
        segmentation = NodeSegmentation(runner, package, input_node, output_kind="segmentation").wait()

    labelmap = node_array(output)
    scores = dice_per_label(labelmap, truth, package.labels)
    target = OUTPUT / "phantom-ct-label.nrrd"
    save_with_slicer(scene, output, target)
    segments = segmentation.GetSegmentation()
    names = [segments.GetNthSegment(index).GetName() for index in range(segments.GetNumberOfSegments())]
    print(f"labelmap: {target} (same grid as the input: {np.allclose(mrml.ijk_to_ras(output), case['ijk_to_ras'])})")
    print(f"segmentation node: {segmentation.GetName()} with segments {names}")
    print("Dice against the ground truth: " + ", ".join(f"{package.labels[v]} {s:.3f}" for v, s in scores.items()))
    title = f"{package.name}: " + ", ".join(f"{package.labels[v]} Dice {s:.3f}" for v, s in scores.items())
    draw_overlay(Volume(image, case["ijk_to_ras"]), labelmap, package.colors, title, OUTPUT / "overlay.png")
    print(f"overlay: {OUTPUT / 'overlay.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
