"""How far can any model agree with the CHAOS copy's labels? An estimate of the label-resampling ceiling.

The CHAOS T2-SPIR copy in ``../shared/data/chaos-mr-t2`` was resampled from the scanner's 8-9 mm slices to
7.7 mm: the images by interpolation, the labels by nearest neighbour. So every few slices a label slice is an
exact copy of its neighbour while the image slice is not (``duplicates`` below), and every label slice sits
up to half a source slice (about 4.5 mm) away from the image slice it is stored with.

This script recovers the nearest-neighbour mapping from the duplicate pattern (output slice j took source
slice ``floor(r * j + c)``), rebuilds the source label slices, and interpolates them to each output slice's
true position by shape-based interpolation (signed distance maps mixed linearly), which is where the image
was sampled. The Dice between that and the stored label estimates how much a perfect, image-faithful
segmentation would still disagree with the reference: a ceiling on the Dice measurable on this copy, not on
the original CHAOS data. It is an estimate: shape-based interpolation is a model of the liver between
slices, not the truth. Prints one row per subject and writes ``<results>/label_resampling_ceiling.json``.

With ``--cv-tag`` it also checks the estimate: each subject is segmented by the dense cross-validation fold
model that never saw it (``bench/accuracy.py generalisation --k 1 --tag TAG`` must have run) and scored
against both the stored and the interpolated label. If the stored labels really sit off the image, the
predictions agree better with the interpolated ones::

    python bench/studies/label_resampling_ceiling.py --results runs/accuracy --cv-tag e120
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.accuracy import DATA, SUBJECTS, held_out_mask, mask_dice  # noqa: E402

LIVER = 1


@dataclass
class SubjectCeiling:
    subject: str
    slices: int
    liver_slices: int
    duplicates: list[int]  # output slices whose whole label equals the previous slice's
    source_step: float  # r: source slices per output slice (output spacing / source spacing)
    source_spacing_mm: float
    unexplained_slices: int  # labelled slices where the fitted mapping and the duplicates disagree
    dice_ceiling: float  # Dice(stored label, label interpolated to the image's positions)
    model_dice_stored: Optional[float] = None  # held-out CV prediction against the stored label
    model_dice_interpolated: Optional[float] = None  # ... and against the interpolated label


def read_labels(subject: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The label array (KJI) and its (x, y, z) spacing in mm."""
    image = sitk.ReadImage(str(DATA / "labels" / f"label_{subject}.nii.gz"))
    return sitk.GetArrayFromImage(image), tuple(float(v) for v in image.GetSpacing())


def duplicated_slices(labels: np.ndarray) -> list[int]:
    """Slices (with any label) identical to the slice before them: the nearest-neighbour repeats."""
    return [j for j in range(1, len(labels)) if labels[j].any() and np.array_equal(labels[j], labels[j - 1])]


def fit_mapping(labels: np.ndarray, duplicates: list[int]) -> tuple[float, float, int]:
    """(r, c, misses): source index floor(r*j + c) repeats at ``duplicates`` among labelled slices, but
    for ``misses`` slices (0 when the pattern is explained exactly)."""
    labelled = [j for j in range(1, len(labels)) if labels[j].any() and labels[j - 1].any()]
    wanted = set(duplicates)
    best: tuple[int, float, float] = (len(labels) + 1, 1.0, 0.0)
    for r in np.arange(0.70, 1.0001, 0.0005):
        for c in np.arange(0.0, 1.0, 0.005):
            index = np.floor(r * np.arange(len(labels)) + c)
            repeats = {j for j in labelled if index[j] == index[j - 1]}
            misses = len(repeats ^ wanted)
            if misses < best[0]:
                best = (misses, float(r), float(c))
    return best[1], best[2], best[0]


def _distance_to(mask: np.ndarray, spacing_mm: tuple[float, float]) -> np.ndarray:
    """Euclidean distance (mm) from every pixel to the nearest pixel of ``mask``."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing_mm)
    return sitk.GetArrayFromImage(sitk.DanielssonDistanceMap(image, inputIsBinary=True, squaredDistance=False,
                                                             useImageSpacing=True))


def signed_distance(mask: np.ndarray, spacing_mm: tuple[float, float]) -> np.ndarray:
    """Negative inside, positive outside, zero half-way between boundary pixels, so linear mixes of two
    slices' maps put the contour between theirs (shape-based interpolation)."""
    if not mask.any():
        return np.full(mask.shape, 1e4, dtype=np.float32)
    if mask.all():
        return np.full(mask.shape, -1e4, dtype=np.float32)
    half_pixel = 0.5 * min(spacing_mm)
    outside = _distance_to(mask, spacing_mm) - half_pixel
    inside = half_pixel - _distance_to(~mask, spacing_mm)
    return np.where(mask, inside, outside).astype(np.float32)


def interpolated_liver(liver: np.ndarray, r: float, c: float, spacing_mm: tuple[float, float]) -> np.ndarray:
    """The liver at each output slice's true source position, from the rebuilt source slices."""
    n = len(liver)
    index = np.floor(r * np.arange(n) + c).astype(int)
    source = {int(s): liver[j] for j, s in enumerate(index)}
    distances: dict[int, np.ndarray] = {}

    def distance(s: int) -> np.ndarray:
        if s not in distances:
            distances[s] = signed_distance(source.get(s, np.zeros_like(liver[0])), spacing_mm)
        return distances[s]

    out = np.zeros_like(liver)
    for j in range(n):
        position = r * j + c - 0.5  # continuous source position; nearest neighbour took floor(position + 0.5)
        low = int(np.floor(position))
        weight = position - low
        if low + 1 not in source and low in source:
            weight_low, weight_high = 1.0, 0.0
        elif low not in source:
            weight_low, weight_high = 0.0, 1.0
        else:
            weight_low, weight_high = 1 - weight, weight
        mixed = weight_low * distance(low) + weight_high * distance(low + 1)
        out[j] = mixed < 0
    return out


def subject_ceiling(subject: str, results: Optional[Path] = None, cv_tag: Optional[str] = None) -> SubjectCeiling:
    labels, (spacing_x, spacing_y, spacing_z) = read_labels(subject)
    in_plane = (spacing_x, spacing_y)
    duplicates = duplicated_slices(labels)
    r, c, misses = fit_mapping(labels, duplicates)
    liver = labels == LIVER
    moved = interpolated_liver(liver, r, c, in_plane)
    row = SubjectCeiling(subject, len(labels), int(liver.any(axis=(1, 2)).sum()), duplicates, round(r, 4),
                         round(spacing_z / r, 2), misses, round(mask_dice(liver, moved), 4))
    if results is not None and cv_tag is not None:
        prediction = held_out_mask(results, subject, cv_tag)
        row.model_dice_stored = round(mask_dice(prediction, liver), 4)
        row.model_dice_interpolated = round(mask_dice(prediction, moved), 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "accuracy")
    parser.add_argument("--cv-tag", default=None,
                        help="also score the held-out dense CV predictions of this recipe tag ('' for the default)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for s in SUBJECTS:
        row = subject_ceiling(s, args.results, args.cv_tag)
        rows.append(row)
        checked = "" if row.model_dice_stored is None else (
            f", model Dice {row.model_dice_stored:.4f} stored / {row.model_dice_interpolated:.4f} interpolated")
        print(f"subject {row.subject:>2}: duplicates at {row.duplicates}, source spacing ~{row.source_spacing_mm} mm, "
              f"unexplained {row.unexplained_slices}, ceiling Dice {row.dice_ceiling:.4f}{checked}", flush=True)
    summary: dict[str, float] = {}
    for field in ("dice_ceiling", "model_dice_stored", "model_dice_interpolated"):
        values = np.array([getattr(row, field) for row in rows if getattr(row, field) is not None])
        if len(values):
            summary[field] = float(values.mean())
            summary[field + "_sd"] = float(values.std())
            print(f"{field}: {values.mean():.4f} +- {values.std():.4f} (min {values.min():.4f})")
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / "label_resampling_ceiling.json"
    out.write_text(json.dumps({"command": " ".join(["python", "bench/studies/label_resampling_ceiling.py"] + sys.argv[1:]),
                               "cv_tag": args.cv_tag, "summary": summary, "subjects": [asdict(row) for row in rows]},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
