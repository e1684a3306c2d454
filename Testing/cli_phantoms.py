"""Tiny synthetic phantoms and model settings shared by the CLI and worker tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from LiverUNetLib.image_io import write_image
from LiverUNetLib.volume import Volume

#: Training settings small enough for a few seconds on two CPU cores.
TINY_SETTINGS = {
    "epochs": 1,
    "base_channels": 4,
    "depth": 2,
    "batch_size": 4,
    "samples_per_epoch": 8,
    "crop_size": 32,
    "in_plane_spacing_mm": 3.0,  # phantoms and CT are resampled to few pixels: fast on CPU
    "device": "cpu",
    "mixed_precision": False,
    "validation_fraction": 0.0,
    # plain BCE: the border weights (the product default) slow a few-step fit of a tiny network on
    # phantoms; they are tested in test_losses.py and measured on real data (docs/accuracy.md)
    "boundary_weight": 0.0,
}


def phantom(seed: int = 0, shape=(8, 40, 44), oblique: bool = False) -> tuple[Volume, Volume]:
    """An MRI-like volume (positive intensities) with a bright ellipsoid 'liver' and its mask."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    radii = np.array([shape[0] * 0.35, shape[1] * 0.3, shape[2] * 0.28])
    inside = ((k - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 + (
        (i - centre[2]) / radii[2]
    ) ** 2 <= 1.0
    image = rng.normal(200, 20, shape) + 500 * inside
    image = np.clip(image, 0, None).astype(np.int16)
    matrix = np.diag([1.5, 1.5, 6.0, 1.0])
    if oblique:
        c, s = np.cos(0.1), np.sin(0.1)
        matrix[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ matrix[:3, :3]
    matrix[:3, 3] = [-30.0, -20.0, 10.0]
    vol = Volume(image, matrix, {"modality": "MR"})
    return vol, vol.with_array(inside.astype(np.uint8))


def write_phantom(folder: Path, name: str, seed: int = 0, **kwargs) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    image, label = phantom(seed, **kwargs)
    image_path = folder / f"image_{name}.nii.gz"
    label_path = folder / f"label_{name}.nii.gz"
    write_image(image, image_path)
    write_image(label, label_path)
    return image_path, label_path
