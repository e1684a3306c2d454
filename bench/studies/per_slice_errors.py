"""Where does a held-out CV model go wrong? Per-slice Dice, false and missed voxels for chosen subjects.

Each subject is segmented by the dense cross-validation fold model that never saw it
(``bench/accuracy.py generalisation --k 1 [--tag TAG]`` must have run)::

    python bench/studies/per_slice_errors.py --results runs/accuracy --tag e120 5 13
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.accuracy import fold_model_path, fold_of, held_out_mask, load_subject, mask_dice  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subjects", nargs="+")
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "accuracy")
    parser.add_argument("--tag", default="")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for subject in args.subjects:
        _, _, liver = load_subject(subject)
        model = fold_model_path(args.results, 1, args.tag, fold_of(subject))
        prediction = held_out_mask(args.results, subject, args.tag)
        reference = liver.array > 0
        axis = liver.slice_axis()
        print(f"subject {subject} (model {model.name}; slices along array axis {axis})")
        for index in range(reference.shape[axis]):
            ref, pred = np.take(reference, index, axis=axis), np.take(prediction, index, axis=axis)
            if not ref.any() and not pred.any():
                continue
            print(f"  slice {index:2d}: reference {ref.sum():6d}  predicted {pred.sum():6d}  Dice {mask_dice(ref, pred):.3f}  "
                  f"false {(pred & ~ref).sum():5d}  missed {(ref & ~pred).sum():5d}")
        print(f"  total: false {(prediction & ~reference).sum()}, missed {(reference & ~prediction).sum()}, "
              f"reference {reference.sum()} voxels")


if __name__ == "__main__":
    main()
