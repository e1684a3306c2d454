"""*Fill from painted slices* timed end to end, as the Segment Editor effect runs it.

The effect hands the warm worker a ``fill`` job (the image file, the painted segment as a label file, where to write
the filled one, start from the shipped model) and ``worker_jobs.run_job`` runs it (``fill.fill_from_painted``);
the warm worker keeps the start model loaded (``cached_model``). Here the same job runs in this process on the
CHAOS CT sample and a CHAOS MRI subject, each painted on every ``k``-th slice that holds liver in the manual label
(``SparseLabel.keep_every_k``, as a person painting every few slices would), the cases interleaved round by round.
Timed: the job, from reading the files to the written mask. Scored: the Dice of the filled mask against the
manual label on the unpainted slices, so that a faster fill can be checked for the accuracy it keeps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from bench.speed_measure import dice, median
from LiverUNetLib.image_io import read_image, write_image
from LiverUNetLib.labels import sparse_label_from_mask
from LiverUNetLib.progress import CancelToken
from LiverUNetLib.shipped_models import SHIPPED_START


@dataclass
class FillCase:
    """An image, its manual liver label (``label_value``; None: any non-zero voxel) and the paint spacing."""

    name: str
    image: Path
    label: Optional[Path]
    label_value: Optional[int]
    every_k: int = 10


@dataclass
class Painted:
    """A case prepared for its fill: the painted label file and what the fill is scored against."""

    path: Path
    slices: list[int]  # the painted slices, along the image's slice axis
    liver: np.ndarray  # the manual liver, slice axis first
    unpainted: np.ndarray  # the slices the fill is scored on
    slice_axis: int
    size: str


def paint(case: FillCase, folder: Path) -> Painted:
    """The label file painted on every ``k``-th liver slice of the manual label, and the manual liver."""
    image = read_image(case.image)
    label = read_image(case.label)
    liver = label.array == case.label_value if case.label_value is not None else label.array > 0
    dense = sparse_label_from_mask(image, label.with_array(liver.astype(np.uint8)), label_value=1, dense=True)
    painted = dense.keep_every_k(case.every_k)
    path = folder / f"{case.name}_painted_every_{case.every_k}.nii.gz"
    write_image(image.with_array(painted.mask.astype(np.uint8)), path)
    axis = painted.slice_axis
    unpainted = np.setdiff1d(np.arange(liver.shape[axis]), painted.annotated)
    slices, rows, columns = image.array.shape
    return Painted(path, [int(i) for i in painted.annotated], np.moveaxis(liver, axis, 0), unpainted, axis,
                   f"{columns}x{rows}x{slices}")


def run_fill_job(image: Path, painted: Path, output: Path, start_model: str = SHIPPED_START,
                 settings: Optional[dict[str, Any]] = None, device: str = "auto") -> dict[str, Any]:
    """The effect's fill job, run as the warm worker runs it; its result line."""
    from LiverUNetLib.worker_jobs import run_job

    job = {"kind": "fill", "image": str(image), "painted": str(painted), "output": str(output),
           "start_model": start_model, "settings": settings or {}, "device": device}
    return run_job(job, lambda event: None, CancelToken())


def time_fills(cases: list[FillCase], repeats: int, work: Path, log: Callable[[str], None],
               start_model: str = SHIPPED_START, settings: Optional[dict[str, Any]] = None,
               device: str = "auto") -> dict[str, Any]:
    """Each case's fill job ``repeats`` times, the cases interleaved; medians and the Dice on unpainted slices."""
    prepared = {c.name: paint(c, work) for c in cases}
    runs: dict[str, list[float]] = {c.name: [] for c in cases}
    scores: dict[str, list[float]] = {c.name: [] for c in cases}
    devices: dict[str, str] = {}
    for round_ in range(1, repeats + 1):
        for c in cases:
            p = prepared[c.name]
            output = work / f"{c.name}_filled.nii.gz"
            started = time.perf_counter()
            result = run_fill_job(c.image, p.path, output, start_model, settings, device)
            runs[c.name].append(time.perf_counter() - started)
            devices[c.name] = result["device"]
            filled = np.moveaxis(read_image(output).array, p.slice_axis, 0)
            scores[c.name].append(dice(filled[p.unpainted], p.liver[p.unpainted]))
            log(f"  fill round {round_} {c.name}: {runs[c.name][-1]:.1f} s, Dice on the unpainted slices "
                f"{scores[c.name][-1]:.4f}")
    return {c.name: {"image": str(c.image), "size": prepared[c.name].size, "every_k": c.every_k,
                     "painted_slices": prepared[c.name].slices, "seconds": median(runs[c.name]),
                     "runs": [round(t, 1) for t in runs[c.name]], "dice_unpainted": median(scores[c.name]),
                     "device": devices[c.name], "start_model": start_model}
            for c in cases}
