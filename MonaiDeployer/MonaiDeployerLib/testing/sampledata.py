"""Synthetic CT-like phantoms with exact ground truth, for testing and demonstrating MonaiDeployer.

A phantom is defined analytically in RAS world coordinates (millimetres): an elliptical body of
soft tissue with a fat rim in air, an "organ" ellipsoid and a "lesion" ellipsoid inside the organ.
Rendering evaluates those shapes at each voxel's RAS centre, so the same phantom can be drawn on
any grid (oblique, anisotropic, LPS-like) and its truth is placed in RAS, independently of how
the grid is oriented. That makes it possible to check that a result lands voxel for voxel on the
input's grid. Only numpy is used because 3D Slicer imports this module. ``python -m
MonaiDeployerLib.testing.sampledata IMAGE`` writes a held-out phantom, to try a model on.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

LABELS = {1: "organ", 2: "lesion"}
COLORS = {1: (0.87, 0.51, 0.40), 2: (0.56, 0.93, 0.56)}

PHANTOM_CENTRE_RAS = np.array([12.0, -18.0, 25.0])
"""Centre of the phantom's field of view, away from the RAS origin so that origins matter."""
FIELD_OF_VIEW_MM = 90.0
"""Every phantom lies inside the cube of this side centred on PHANTOM_CENTRE_RAS."""
TRAINING_SPACING_MM = 1.5
FIRST_HELD_OUT_SEED = 1000
"""Training uses seeds below this one; held_out_cases() use seeds from it on."""

AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
ORGAN_HU = 130.0
LESION_HU = 60.0
NOISE_SIGMA_HU = 15.0

_MAX_BODY_SHIFT_MM = 1.5
_MAX_BODY_SEMI_AXIS_MM = FIELD_OF_VIEW_MM / 2 - 2 * _MAX_BODY_SHIFT_MM


@dataclass(frozen=True)
class _Ellipsoid:
    centre: np.ndarray
    """RAS position of the centre, mm."""
    rotation: np.ndarray
    """3x3 matrix whose columns are the ellipsoid's axes in RAS."""
    semi_axes: np.ndarray
    """Semi-axis lengths along those axes, mm."""

    def normalised_radius_squared(self, points_ras: np.ndarray) -> np.ndarray:
        """Below 1 inside, 1 on the surface, above 1 outside; points_ras has shape (..., 3)."""
        local = (points_ras - self.centre) @ self.rotation
        return np.sum((local / self.semi_axes) ** 2, axis=-1)

    def surface_points(self) -> np.ndarray:
        return self.centre + (_UNIT_SPHERE_POINTS * self.semi_axes) @ self.rotation.T

    def shrunk_by(self, thickness_mm: float) -> _Ellipsoid:
        return _Ellipsoid(self.centre, self.rotation, self.semi_axes - thickness_mm)


@dataclass(frozen=True)
class _Phantom:
    body: _Ellipsoid
    soft_tissue: _Ellipsoid
    """The body without its fat rim."""
    organ: _Ellipsoid
    lesion: _Ellipsoid


def _fibonacci_sphere(count: int) -> np.ndarray:
    """Nearly evenly spread unit vectors, used to test that one ellipsoid lies inside another."""
    index = np.arange(count) + 0.5
    polar = np.arccos(1.0 - 2.0 * index / count)
    azimuth = np.pi * (1.0 + 5.0**0.5) * index
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=-1)


_UNIT_SPHERE_POINTS = _fibonacci_sphere(500)


def _rotation_about(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rodrigues' formula: the rotation by angle_deg about axis (any length)."""
    x, y, z = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    angle = np.radians(angle_deg)
    return np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * cross @ cross


def _random_rotation(rng: np.random.Generator, max_angle_deg: float) -> np.ndarray:
    return _rotation_about(rng.normal(size=3), rng.uniform(-max_angle_deg, max_angle_deg))


def _lies_inside(inner: _Ellipsoid, outer: _Ellipsoid, margin: float) -> bool:
    """True when inner's surface stays inside outer, shrunk by the fraction margin."""
    return bool(np.all(outer.normalised_radius_squared(inner.surface_points()) <= (1.0 - margin) ** 2))


def _draw_inside(rng: np.random.Generator, container: _Ellipsoid, draw, margin: float) -> _Ellipsoid:
    """Draw ellipsoids with draw(rng) until one lies inside container (seeded, so deterministic)."""
    for _ in range(10_000):
        candidate = draw(rng)
        if _lies_inside(candidate, container, margin):
            return candidate
    raise RuntimeError("no ellipsoid fitted inside its container; the phantom's size ranges disagree")


def _draw_organ(rng: np.random.Generator, body: _Ellipsoid) -> _Ellipsoid:
    return _Ellipsoid(
        centre=body.centre + rng.uniform(-8.0, 8.0, size=3),
        rotation=_random_rotation(rng, 180.0),
        semi_axes=rng.uniform([24.0, 18.0, 21.0], [31.0, 24.0, 28.0]),
    )


def _draw_lesion(rng: np.random.Generator, organ: _Ellipsoid) -> _Ellipsoid:
    offset_in_organ = rng.uniform(-0.2, 0.2, size=3) * organ.semi_axes
    return _Ellipsoid(
        centre=organ.centre + organ.rotation @ offset_in_organ,
        rotation=_random_rotation(rng, 180.0),
        semi_axes=rng.uniform(11.0, 15.0, size=3),
    )


def _make_phantom(seed: int) -> _Phantom:
    """The phantom's geometry, drawn from seed alone (not from any grid)."""
    rng = np.random.default_rng([seed, 0])
    body = _Ellipsoid(
        centre=PHANTOM_CENTRE_RAS + rng.uniform(-_MAX_BODY_SHIFT_MM, _MAX_BODY_SHIFT_MM, size=3),
        rotation=_random_rotation(rng, 30.0),
        semi_axes=rng.uniform([37.0, 32.0, 37.0], _MAX_BODY_SEMI_AXIS_MM),
    )
    soft_tissue = body.shrunk_by(rng.uniform(3.0, 5.0))
    organ = _draw_inside(rng, soft_tissue, lambda r: _draw_organ(r, body), margin=0.05)
    lesion = _draw_inside(rng, organ, lambda r: _draw_lesion(r, organ), margin=0.25)
    return _Phantom(body=body, soft_tissue=soft_tissue, organ=organ, lesion=lesion)


def _voxel_centres_ras(shape: tuple, ijk_to_ras: np.ndarray) -> np.ndarray:
    """RAS position of every voxel centre, shape (*shape, 3)."""
    ijk = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij"), axis=-1)
    return ijk @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3]


def render_phantom(shape: tuple, ijk_to_ras: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Render phantom seed on a grid: (image in HU as float32, truth labels as uint8), both [i, j, k].

    The geometry depends on seed only; the noise also depends on the grid's shape.
    """
    phantom = _make_phantom(seed)
    points = _voxel_centres_ras(tuple(shape), np.asarray(ijk_to_ras, dtype=np.float64))
    in_body = phantom.body.normalised_radius_squared(points) <= 1.0
    in_soft_tissue = phantom.soft_tissue.normalised_radius_squared(points) <= 1.0
    in_organ = phantom.organ.normalised_radius_squared(points) <= 1.0
    in_lesion = phantom.lesion.normalised_radius_squared(points) <= 1.0
    del points

    image = np.full(shape, AIR_HU, dtype=np.float32)
    image[in_body] = FAT_HU
    image[in_soft_tissue] = SOFT_TISSUE_HU
    image[in_organ] = ORGAN_HU
    image[in_lesion] = LESION_HU
    noise_rng = np.random.default_rng([seed, 1])
    image += NOISE_SIGMA_HU * noise_rng.standard_normal(shape, dtype=np.float32)

    truth = np.zeros(shape, dtype=np.uint8)
    truth[in_organ] = 1
    truth[in_lesion] = 2
    return image, truth


def _grid_centred_on_phantom(
    shape: tuple, spacing: tuple, directions: np.ndarray, shift_mm: tuple = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """IJK-to-RAS matrix of a grid whose centre lies shift_mm from the phantom's centre.

    directions holds the grid's unit axis vectors in RAS as columns.
    """
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = np.asarray(directions, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    grid_centre_ijk = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    ijk_to_ras[:3, 3] = PHANTOM_CENTRE_RAS + np.asarray(shift_mm) - ijk_to_ras[:3, :3] @ grid_centre_ijk
    return ijk_to_ras


def training_grid(size: int = 64, spacing: float = TRAINING_SPACING_MM) -> tuple[tuple, np.ndarray]:
    """(shape, ijk_to_ras) of the axis-aligned RAS grid the sample model is trained on.

    The defaults span 96 mm, just over the phantom's field of view.
    """
    shape = (size, size, size)
    return shape, _grid_centred_on_phantom(shape, (spacing,) * 3, np.eye(3))


def benchmark_grid(size: int = 128) -> tuple[tuple, np.ndarray]:
    """(shape, ijk_to_ras) of an axis-aligned RAS grid at the model's own spacing, for timing.

    A model that asks for RAS at 1.5 mm resamples nothing here, so a benchmark measures inference.
    """
    return training_grid(size, TRAINING_SPACING_MM)


def _oblique_directions() -> np.ndarray:
    """Axes rotated 25 degrees about R, then 20 degrees about S, like a tilted acquisition."""
    return _rotation_about([0.0, 0.0, 1.0], 20.0) @ _rotation_about([1.0, 0.0, 0.0], 25.0)


def _held_out_case(name: str, shape: tuple, spacing: tuple, directions: np.ndarray, shift_mm: tuple, seed: int) -> dict:
    ijk_to_ras = _grid_centred_on_phantom(shape, spacing, directions, shift_mm)
    return {"name": name, "shape": shape, "ijk_to_ras": ijk_to_ras, "seed": seed}


def held_out_cases() -> list[dict]:
    """Phantoms that no training used, on grids unlike the training grid; each covers its phantom.

    Each case is {"name", "shape", "ijk_to_ras", "seed"}; render it with render_phantom. The grids'
    centres are a few millimetres off the phantom's so that no grid is symmetric about it.
    """
    lps_like = np.diag([-1.0, -1.0, 1.0])  # i runs right to left and j anterior to posterior, as in DICOM CT
    return [
        _held_out_case("oblique", (96, 96, 96), (1.25, 1.25, 1.25), _oblique_directions(), (2.0, -3.0, 1.0), 1001),
        _held_out_case("anisotropic", (112, 92, 42), (0.9, 1.1, 2.5), np.eye(3), (-1.0, 2.0, 3.0), 1002),
        _held_out_case("lps-like", (128, 128, 50), (0.8, 0.8, 2.0), lps_like, (3.0, 1.0, -2.0), 1003),
    ]


def main(argv=None) -> int:
    """``python -m MonaiDeployerLib.testing.sampledata IMAGE [--truth TRUTH] [--case NAME]``: write a phantom."""
    import argparse

    from ..errors import MonaiDeployerError
    from ..imageio.volume import Volume, write_volume

    cases = {case["name"]: case for case in held_out_cases()}
    parser = argparse.ArgumentParser(prog="python -m MonaiDeployerLib.testing.sampledata",
                                     description="Write a CT-like phantom that the sample model was not trained on.")
    parser.add_argument("image", help="the image in HU: .nrrd, .nii or .nii.gz")
    parser.add_argument("--truth", help="also write its true labelmap (1=organ, 2=lesion) here; .seg.nrrd names them")
    parser.add_argument("--case", choices=list(cases), default="lps-like", help="its grid (default: %(default)s)")
    arguments = parser.parse_args(argv)
    case = cases[arguments.case]
    image, truth = render_phantom(case["shape"], case["ijk_to_ras"], case["seed"])
    try:
        print(write_volume(arguments.image, Volume(image, case["ijk_to_ras"])))
        if arguments.truth:
            print(write_volume(arguments.truth, Volume(truth, case["ijk_to_ras"]), LABELS, COLORS))
    except MonaiDeployerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
