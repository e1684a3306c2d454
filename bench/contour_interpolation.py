"""ITK's morphological contour interpolation (the engine of Slicer's "Fill between slices"), isolated.

Run as its own process: itk 5.4.7 with itk-morphologicalcontourinterpolation 2.1.2 corrupts the
heap on real CHAOS masks ("malloc_consolidate(): unaligned fastbin chunk detected", SIGABRT when the
interpreter exits, with or without torch loaded). The child saves its result and leaves with
``os._exit`` so the damaged heap is never torn down; a crash before the result is saved still fails.

    python -m bench.contour_interpolation SPARSE.npy OUT.npy AXIS
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def interpolate_in_process(sparse: np.ndarray, numpy_axis: int) -> np.ndarray:
    import itk

    image = itk.image_from_array(np.ascontiguousarray(sparse.astype(np.uint8)))
    interpolator = itk.MorphologicalContourInterpolator.New(image)
    interpolator.SetAxis(2 - numpy_axis)  # ITK axis order is IJK; numpy axis 0 is K
    interpolator.Update()
    return (itk.array_from_image(interpolator.GetOutput()) > 0).astype(np.uint8)


def interpolate(sparse: np.ndarray, numpy_axis: int) -> np.ndarray:
    """Fill between the painted slices of ``sparse`` along ``numpy_axis``, in a child process."""
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "sparse.npy", Path(folder) / "filled.npy"
        np.save(source, sparse.astype(np.uint8))
        root = Path(__file__).resolve().parents[1]
        subprocess.run(
            [sys.executable, "-m", "bench.contour_interpolation", str(source), str(target), str(numpy_axis)],
            check=True, cwd=root,
        )
        return np.load(target)


if __name__ == "__main__":
    source, target, axis = sys.argv[1], sys.argv[2], int(sys.argv[3])
    filled = interpolate_in_process(np.load(source), axis)
    with open(target, "wb") as stream:
        np.save(stream, filled)
        stream.flush()
        os.fsync(stream.fileno())
    os._exit(0)  # skip ITK's exit-time destructors, which crash on the corrupted heap
