"""bench/studies/label_resampling_ceiling.py recovers a nearest-neighbour slice resampling and undoes it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ceiling = pytest.importorskip("bench.studies.label_resampling_ceiling")

STEP, PHASE = 0.85, 0.3  # source slices per output slice, and the grid's offset


def _cone_source(count: int = 12, size: int = 48) -> np.ndarray:
    """Source slices of a cone: a disc whose radius shrinks linearly, so shape interpolation is exact."""
    j, i = np.indices((size, size))
    radius = np.linspace(20, 4, count)
    return np.stack([(j - size / 2) ** 2 + (i - size / 2) ** 2 <= r**2 for r in radius]).astype(np.uint8)


def _nearest_neighbour_upsampled(source: np.ndarray, outputs: int) -> np.ndarray:
    index = np.floor(STEP * np.arange(outputs) + PHASE).astype(int)
    return source[np.clip(index, 0, len(source) - 1)]


def test_duplicates_and_mapping_are_recovered_exactly():
    labels = _nearest_neighbour_upsampled(_cone_source(), 13)
    duplicates = ceiling.duplicated_slices(labels)
    index = np.floor(STEP * np.arange(13) + PHASE)
    assert duplicates == [j for j in range(1, 13) if index[j] == index[j - 1]]
    assert duplicates  # the test grid really repeats slices
    r, c, misses = ceiling.fit_mapping(labels, duplicates)
    assert misses == 0
    fitted = np.floor(r * np.arange(13) + c)
    assert ceiling.duplicated_slices(labels) == [j for j in range(1, 13) if fitted[j] == fitted[j - 1]]


def test_interpolation_moves_each_slice_to_its_true_position():
    source = _cone_source()
    labels = _nearest_neighbour_upsampled(source, 13).astype(bool)
    moved = ceiling.interpolated_liver(labels, STEP, PHASE, (1.0, 1.0))
    # a cone's true radius at a continuous source position is the linear mix of its neighbours' radii
    radius = np.linspace(20, 4, 12)
    for j in range(1, 12):
        position = STEP * j + PHASE - 0.5
        true_radius = np.interp(position, np.arange(12), radius)
        measured = np.sqrt(moved[j].sum() / np.pi)
        assert measured == pytest.approx(true_radius, abs=0.7)
    agreement = ceiling.mask_dice(labels, moved)
    assert 0.8 < agreement < 1.0  # the stored nearest-neighbour slices really sit off their positions
