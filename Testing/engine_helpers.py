"""Geometry, phantoms and hand-built models shared by the engine tests (volume ... training).

``pointwise_model`` is a real :class:`UNet` whose weights are set by hand so that its logit is
``10 * relu(x) - 5`` of one input channel, pixel by pixel: inference results can then be predicted
exactly (grid, orientation, tiling, batching, 2.5D context), which an untrained network cannot give.
``trained_phantom_model`` trains a tiny network once per test run and shares it.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

from cli_phantoms import TINY_SETTINGS, phantom
from LiverUNetLib.labels import sparse_label_from_mask
from LiverUNetLib.model_file import LiverModel, load_model
from LiverUNetLib.networks import NetworkConfig, Normalization, UNet
from LiverUNetLib.preprocessing import IntensityRegion, Modality, PreprocessConfig
from LiverUNetLib.volume import Volume

@contextlib.contextmanager
def single_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread for the tiny engine models (imported by each engine test module).

    On two cores shared with other jobs, two OpenMP threads spin-wait on each other: a tiny training
    measured 30 s with two threads and 0.5 s with one.
    """
    with single_torch_thread():
        yield


# Columns are the I, J, K directions in RAS (before spacing).
AXIAL = np.eye(3)
# Sagittal DICOM-like: columns run anterior -> posterior, rows superior -> inferior, slices along R.
SAGITTAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
# Coronal DICOM-like: columns along R, rows superior -> inferior, slices along A.
CORONAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
# Coronal with the I (column) axis along S: the superior axis is numpy axis 2.
CORONAL_I_SUPERIOR = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def rotation_about(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    if axis == "R":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "A":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


OBLIQUE_AXIAL = rotation_about("R", 25) @ rotation_about("S", 10) @ AXIAL
OBLIQUE_SAGITTAL = rotation_about("S", 30) @ SAGITTAL

#: name -> (direction columns, numpy slice axis)
ORIENTATIONS = {
    "axial": (AXIAL, 0),
    "sagittal": (SAGITTAL, 1),
    "coronal": (CORONAL, 1),
    "coronal_i_superior": (CORONAL_I_SUPERIOR, 2),
    "oblique_axial": (OBLIQUE_AXIAL, 0),
    "oblique_sagittal": (OBLIQUE_SAGITTAL, 1),
}


def matrix(directions: np.ndarray, spacing_ijk=(0.8, 0.9, 3.0), origin=(-20.0, 15.0, 40.0)) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.asarray(directions, dtype=float) * np.asarray(spacing_ijk, dtype=float)[None, :]
    m[:3, 3] = origin
    return m


def slice_first_shape(slices: int, rows: int, cols: int, axis: int) -> tuple[int, int, int]:
    """KJI shape whose ``axis`` holds ``slices`` and whose other two axes hold rows, cols."""
    shape = [rows, cols]
    shape.insert(axis, slices)
    return tuple(shape)


def box_volume(
    orientation: str = "axial",
    slices: int = 9,
    rows: int = 30,
    cols: int = 34,
    box=((2, 7), (6, 20), (4, 14)),
    spacing_in_plane: float = 1.5,
    slice_spacing: float = 4.0,
    background: float = 100.0,
    bright: float = 1000.0,
    air_columns: int = 0,
) -> tuple[Volume, np.ndarray]:
    """An MRI-like volume with a bright box; ``box`` is given in slice-first (slice, row, col) order.

    Returns the volume and the box mask (KJI, bool). The box is off-centre in every direction, so a
    transposed, flipped or shifted result is detected. ``air_columns`` darkens the first columns to
    0, which makes the background read as body (tissue) rather than as air.
    """
    directions, axis = ORIENTATIONS[orientation]
    shape_kji = slice_first_shape(slices, rows, cols, axis)
    first = np.zeros((slices, rows, cols), dtype=bool)
    (s0, s1), (r0, r1), (c0, c1) = box
    first[s0:s1, r0:r1, c0:c1] = True
    mask = np.moveaxis(first, 0, axis)
    assert mask.shape == shape_kji
    spacing_kji = [spacing_in_plane] * 3
    spacing_kji[axis] = slice_spacing
    spacing_ijk = spacing_kji[::-1]
    first_array = np.where(first, bright, background).astype(np.float32)
    first_array[:, :, :air_columns] = 0.0
    array = np.ascontiguousarray(np.moveaxis(first_array, 0, axis))
    volume = Volume(array, matrix(directions, spacing_ijk))
    assert volume.slice_axis() == axis
    return volume, mask


def pointwise_network(in_channels: int = 1, source_channel: Optional[int] = None, depth: int = 2,
                      gain: float = 10.0, offset: float = -5.0) -> UNet:
    """A UNet whose logit is ``gain * relu(x[source_channel]) + offset`` at every pixel."""
    config = NetworkConfig(in_channels=in_channels, base_channels=2, depth=depth, normalization=Normalization.NONE)
    net = UNet(config)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        source = in_channels // 2 if source_channel is None else source_channel
        net.encoders[0][0].weight[0, source, 1, 1] = 1.0
        net.encoders[0][3].weight[0, 0, 1, 1] = 1.0
        width = config.base_channels
        net.decoders[-1][0].weight[0, width, 1, 1] = 1.0  # channel 0 of the level-0 skip connection
        net.decoders[-1][3].weight[0, 0, 1, 1] = 1.0
        net.head.weight[0, 0, 0, 0] = gain
        net.head.bias[0] = offset
    return net.eval()


def pointwise_model(in_plane_spacing_mm: Optional[float] = None, context_slices: int = 0,
                    source_channel: Optional[int] = None, networks: Optional[list[UNet]] = None) -> LiverModel:
    # whole-volume statistics: the hand-set weights assume the phantom's background sets the scale
    preprocess = PreprocessConfig(
        Modality.MRI, in_plane_spacing_mm=in_plane_spacing_mm, context_slices=context_slices,
        intensity_region=IntensityRegion.VOLUME,
    )
    nets = networks or [pointwise_network(preprocess.in_channels, source_channel)]
    return LiverModel(nets, nets[0].config, preprocess)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


#: Training settings for the shared model: a few hundred tiny steps, seconds on two cores.
LEARNABLE_SETTINGS = dict(
    TINY_SETTINGS, epochs=6, samples_per_epoch=32, learning_rate=1e-2, validation_fraction=0.34, patience=0,
    validation_min_cases=2,  # three phantom cases: one validates
)


def phantom_cases(count: int = 3, every_k: int = 2, **kwargs):
    from LiverUNetLib.training import TrainingCase

    cases = []
    for seed in range(count):
        image, label = phantom(seed=seed, **kwargs)
        sparse = sparse_label_from_mask(image, label)
        if every_k > 1:
            sparse = sparse.keep_every_k(every_k)
        cases.append(TrainingCase(f"case{seed}", image, sparse))
    return cases


@functools.lru_cache(maxsize=1)
def _trained() -> tuple[bytes, dict]:
    from LiverUNetLib.training import TrainConfig, train

    events = []
    with tempfile.TemporaryDirectory() as folder, single_torch_thread():  # module fixtures run before one_thread
        path = Path(folder) / "phantom.pt"
        result = train(phantom_cases(), TrainConfig(**LEARNABLE_SETTINGS), path, progress=events.append, resume=False)
        data = path.read_bytes()
    return data, {"result": result, "events": events}


def trained_phantom_model(folder: Path) -> tuple[Path, dict]:
    """A tiny model trained on bright-ellipsoid phantoms (trained once per run), written into ``folder``."""
    data, info = _trained()
    path = Path(folder) / "phantom.pt"
    path.write_bytes(data)
    return path, info


def load_trained_phantom_model(folder: Path) -> LiverModel:
    return load_model(trained_phantom_model(folder)[0])
