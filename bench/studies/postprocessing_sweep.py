"""Does post-processing help? Threshold, scale TTA, hole filling and the largest-component step, cross-validated.

Also the resolution bound: the manual mask taken to the network's in-plane spacing and back (bilinear,
threshold 0.5), which is the best Dice a perfect network working at that spacing could reach.

Each CHAOS subject is segmented by the cross-validation fold model that never saw it (``bench/accuracy.py
generalisation`` must have run), once without and once with TTA; the probability map is then thresholded
and cleaned in every variant. Prints the mean Dice over the 15 subjects per variant and writes the per-subject
values to ``<results>/postprocessing_sweep_k<K>.json``::

    python bench/studies/postprocessing_sweep.py --results runs/accuracy --k 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.accuracy import SUBJECTS, fold_model_path, fold_of, load_subject  # noqa: E402
from bench.accuracy import mask_dice as dice  # noqa: E402
from LiverUNetLib.inference import InferenceConfig, segment_volume  # noqa: E402
from LiverUNetLib.postprocessing import fill_holes_per_slice, largest_component  # noqa: E402
from LiverUNetLib.preprocessing import in_plane_spacing, network_size, resample_slices, to_slice_first  # noqa: E402

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def resolution_bound(liver, spacing_mm: float) -> float:
    """Dice of the manual mask after a round trip through ``spacing_mm`` in plane."""
    axis = liver.slice_axis()
    slices = torch.from_numpy(to_slice_first(liver.array, axis).astype(np.float32))[:, None]
    native = tuple(slices.shape[-2:])
    small = (resample_slices(slices, network_size(native, in_plane_spacing(liver), spacing_mm)) >= 0.5).float()
    back = (resample_slices(small, native) >= 0.5)[:, 0].numpy()
    return dice(back, to_slice_first(liver.array, axis) > 0)


def sweep_subject(subject: str, model: Path) -> dict[str, float]:
    image, _, liver = load_subject(subject)
    reference = liver.array > 0
    row: dict[str, float] = {f"resolution_bound_{mm}mm": resolution_bound(liver, mm) for mm in (2.5, 1.875)}
    for name, tta in (("plain", False), ("tta", True)):
        config = InferenceConfig(device="cpu", tta=tta, return_probability=True)
        probability = segment_volume(image, model, config).probability.array
        for threshold in THRESHOLDS:
            mask = largest_component(probability >= threshold)
            row[f"{name}_{threshold}"] = dice(mask, reference)
        row[f"{name}_0.5_fill_holes"] = dice(fill_holes_per_slice(largest_component(probability >= 0.5),
                                                                  image.slice_axis()), reference)
        row[f"{name}_0.5_no_largest_component"] = dice(probability >= 0.5, reference)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "accuracy")
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for subject in SUBJECTS:
        model = fold_model_path(args.results, args.k, "", fold_of(subject))
        rows[subject] = sweep_subject(subject, model)
        print(subject, {key: round(value, 3) for key, value in rows[subject].items()}, flush=True)
    for key in rows[SUBJECTS[0]]:
        print(f"{key}: mean Dice {np.mean([rows[s][key] for s in SUBJECTS]):.4f}")
    (args.results / f"postprocessing_sweep_k{args.k}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
