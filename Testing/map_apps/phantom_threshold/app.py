"""A MAP's app with neither MONAI nor torch: it segments the sample phantom CT with numpy alone.

The MAP specification leaves the app free (numpy, C++, another framework); this one reads the
NIfTI in ``HOLOSCAN_INPUT_PATH`` and writes ``seg.nii.gz`` to ``HOLOSCAN_OUTPUT_PATH``. The
phantom's organ (130 HU) holds a lesion (60 HU) and lies in soft tissue (40 HU), with 15 HU
noise: a 3x3x3 mean takes the noise down to 3 HU, each boundary is where the mean crosses the
midpoint of the two sides, and the organ is convex, so the lesion is what the organ encloses.
"""

import glob
import os

import nibabel
import numpy as np

ORGAN_OR_LESION, LESION_EDGE = 85.0, 95.0  # midpoints: soft tissue | organ, lesion | organ


def box_mean(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image, 1, mode="edge")
    total = np.zeros_like(image)
    for di in range(3):
        for dj in range(3):
            for dk in range(3):
                total += padded[di:di + image.shape[0], dj:dj + image.shape[1], dk:dk + image.shape[2]]
    return total / 27.0


def enclosed(mask: np.ndarray) -> np.ndarray:
    """Voxels with a mask voxel on both sides along each axis: the mask with its holes filled, for a convex shape."""
    inside = np.ones_like(mask)
    for axis in range(3):
        before = np.maximum.accumulate(mask, axis=axis)
        after = np.flip(np.maximum.accumulate(np.flip(mask, axis=axis), axis=axis), axis=axis)
        inside &= before & after
    return inside | mask


def segment(image: np.ndarray) -> np.ndarray:
    mean = box_mean(image.astype(np.float32))
    organ_or_lesion = enclosed(mean > ORGAN_OR_LESION)
    core = mean >= LESION_EDGE
    lesion = enclosed(core) & ~core & organ_or_lesion
    labels = np.zeros(image.shape, np.uint8)
    labels[organ_or_lesion] = 1
    labels[lesion] = 2
    return labels


def main() -> None:
    input_folder = os.environ.get("HOLOSCAN_INPUT_PATH", "/var/holoscan/input")
    output_folder = os.environ.get("HOLOSCAN_OUTPUT_PATH", "/var/holoscan/output")
    path = sorted(glob.glob(os.path.join(input_folder, "*.nii*")))[0]
    image = nibabel.load(path)
    print(f"segmenting {os.path.basename(path)}")
    labels = segment(np.asanyarray(image.dataobj))
    nibabel.save(nibabel.Nifti1Image(labels, image.affine), os.path.join(output_folder, "seg.nii.gz"))


if __name__ == "__main__":
    main()
