"""Are the held-out errors a loose outline or whole regions? (distance of each wrong voxel to the outline)

A border-weighted loss or a finer grid can only fix errors near the reference outline; missed lobes and
false regions on a neighbouring organ need a model that tells the tissues apart. For every held-out
subject of a dense CV run this counts the wrong voxels (missed and false) within ``--near-mm`` of the
manual outline, measured in plane on each slice, and those farther away::

    python bench/studies/error_distance.py --tag e120 --output docs/accuracy_results/error_distance/e120.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.accuracy import SUBJECTS, load_subject  # noqa: E402
from bench.studies.ensemble_gain import held_out_probability, liver_mask  # noqa: E402


def in_plane_distance_to_outline(reference: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Per slice (axis 0), each pixel's distance in mm to the reference outline (inf on empty slices)."""
    distance = np.full(reference.shape, np.inf, dtype=np.float32)
    for k, plane in enumerate(reference):
        if plane.any() and not plane.all():
            image = sitk.GetImageFromArray(plane.astype(np.uint8))
            image.SetSpacing((spacing[1], spacing[0]))
            distance[k] = np.abs(sitk.GetArrayFromImage(
                sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)))
    return distance


def error_split(reference: np.ndarray, prediction: np.ndarray, spacing: tuple[float, float], near_mm: float) -> dict[str, int]:
    """Wrong voxels near the outline and farther (slices without liver count as far)."""
    distance = in_plane_distance_to_outline(reference, spacing)
    missed, false = reference & ~prediction, prediction & ~reference
    near = distance <= near_mm
    return {"missed_near": int((missed & near).sum()), "missed_far": int((missed & ~near).sum()),
            "false_near": int((false & near).sum()), "false_far": int((false & ~near).sum()),
            "liver": int(reference.sum())}


def wrong_and_far(split: dict[str, int]) -> tuple[int, int]:
    """All wrong voxels of an ``error_split`` and those farther than the near band."""
    return sum(v for key, v in split.items() if key != "liver"), split["missed_far"] + split["false_far"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="e120", help="recipe tag of a dense CV run")
    parser.add_argument("--near-mm", type=float, default=3.0)
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "accuracy")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    cache = args.results / "probabilities"
    rows: dict[str, dict[str, int]] = {}
    for subject in SUBJECTS:
        image, _, liver = load_subject(subject)
        axis = image.slice_axis()
        prediction = liver_mask(held_out_probability(args.results, args.tag, subject, image, cache))
        reference = np.moveaxis(liver.array > 0, axis, 0)
        spacing = tuple(float(s) for i, s in enumerate(image.spacing_kji) if i != axis)
        rows[subject] = error_split(reference, np.moveaxis(prediction, axis, 0), spacing, args.near_mm)
        wrong, far = wrong_and_far(rows[subject])
        print(f"subject {subject}: {wrong} wrong voxels, {100 * far / max(wrong, 1):.0f} % "
              f"farther than {args.near_mm:g} mm from the outline", flush=True)
    total = {key: sum(r[key] for r in rows.values()) for key in next(iter(rows.values()))}
    wrong, far = wrong_and_far(total)
    far_share = far / wrong
    print(f"all subjects: {wrong} wrong voxels ({total['liver']} liver voxels); {100 * far_share:.0f} % farther than "
          f"{args.near_mm:g} mm from the outline; missed {total['missed_near'] + total['missed_far']}, "
          f"false {total['false_near'] + total['false_far']}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"tag": args.tag, "near_mm": args.near_mm, "far_share": round(far_share, 4),
                                           "total": total, "subjects": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
