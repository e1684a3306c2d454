"""Does averaging several CV runs' fold models help a held-out subject? (ensembling within a fold)

For each fold, the fold models of the given recipe tags (dense, or painted every ``--k``-th slice), all of
which never saw the fold's held-out subjects, each give a liver probability on the subject's own grid
(``--slice-smoothing``: then averaged across slices as the product does); the ensemble averages those
probabilities with equal weight per tag, thresholds at 0.5 and keeps the largest component, as the shipped
model does with its networks. Averaging on the subject's grid rather than inside one model file lets
recipes with different networks or input slices (depth 5, 5 slices in) join one ensemble::

    python bench/studies/ensemble_gain.py --tags e120 e120_seed1 --folds 2 4
    python bench/studies/ensemble_gain.py --tags e120 e120_d5 --output docs/accuracy_results/ensemble/e120_d5.json
    python bench/studies/ensemble_gain.py --k 5 --slice-smoothing --tags e120_bw5_lfw e120_bw5_lfw_seed1

Each tag's probabilities are cached (float16, ``--cache``), so trying other combinations of the same
tags costs no further inference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.accuracy import FOLDS, SUBJECTS, fold_model_path, fold_of, load_subject, mask_dice  # noqa: E402
from LiverUNetLib.inference import InferenceConfig, segment_volume  # noqa: E402
from LiverUNetLib.postprocessing import largest_component, smooth_across_slices  # noqa: E402
from LiverUNetLib.volume import Volume  # noqa: E402

THRESHOLD = 0.5


def held_out_probability(results: Path, tag: str, subject: str, image: Volume, cache: Path, k: int = 1) -> np.ndarray:
    """The liver probability (KJI, float32) of the fold-``tag`` model (painted every ``k``-th slice; 1: dense)
    that never saw ``subject``."""
    model = fold_model_path(results, k, tag, fold_of(subject))
    stored = cache / f"{'' if k == 1 else f'k{k}_'}{tag or 'e40'}_s{subject}.npy"
    if stored.exists() and stored.stat().st_mtime >= model.stat().st_mtime:
        return np.load(stored).astype(np.float32)
    # the network's own probability: smoothing across slices is a post-processing step (liver_mask)
    result = segment_volume(image, model, InferenceConfig(device="cpu", return_probability=True, slice_smoothing=False))
    probability = result.probability.array
    cache.mkdir(parents=True, exist_ok=True)
    np.save(stored, probability.astype(np.float16))
    return probability.astype(np.float16).astype(np.float32)  # the cached precision, so reruns agree


def add_probability_cache_arguments(parser: argparse.ArgumentParser) -> None:
    """--results, --cache and --threads, shared by the benchmarks that read held-out probabilities."""
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "accuracy")
    parser.add_argument("--cache", type=Path, help="probability cache (default: RESULTS/probabilities)")
    parser.add_argument("--threads", type=int, default=1)


def probability_cache(args: argparse.Namespace) -> Path:
    """Apply --threads and return the cache folder chosen by those arguments."""
    torch.set_num_threads(args.threads)
    return args.cache or args.results / "probabilities"


def liver_mask(probability: np.ndarray, smoothing_axis: Optional[int] = None) -> np.ndarray:
    """Threshold and largest component, the benchmark's post-processing; with ``smoothing_axis`` (the
    slice axis) the probability is first averaged across slices as the product does by default."""
    if smoothing_axis is not None:
        probability = smooth_across_slices(probability.copy(), smoothing_axis)
    mask = probability >= THRESHOLD
    return largest_component(mask) if mask.any() else mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", nargs="+", required=True, help="recipe tags of CV runs ('' for the 40-epoch default)")
    parser.add_argument("--k", type=int, default=1, help="the CV runs painted every k-th slice (default 1: dense)")
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(FOLDS)))
    parser.add_argument("--slice-smoothing", action="store_true",
                        help="average each slice's probability with its neighbours' first, as the product does")
    add_probability_cache_arguments(parser)
    parser.add_argument("--output", type=Path, help="write the per-subject Dice as JSON here")
    args = parser.parse_args()
    cache = probability_cache(args)
    for tag in args.tags:
        for fold in args.folds:
            if not fold_model_path(args.results, args.k, tag, fold).exists():
                raise SystemExit(f"no k={args.k} fold-{fold} model for tag {tag!r} in {args.results}; run its CV first")
    rows: dict[str, dict[str, float]] = {}
    for fold in args.folds:
        for subject in (s for s in SUBJECTS if fold_of(s) == fold):
            image, _, liver = load_subject(subject)
            reference = liver.array > 0
            probabilities = {tag: held_out_probability(args.results, tag, subject, image, cache, args.k) for tag in args.tags}
            axis = image.slice_axis() if args.slice_smoothing else None
            row = {tag or "e40": mask_dice(reference, liver_mask(p, axis)) for tag, p in probabilities.items()}
            row["ensemble"] = mask_dice(reference, liver_mask(np.mean(list(probabilities.values()), axis=0), axis))
            rows[subject] = row
            print(f"fold {fold} subject {subject}: " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    columns = list(next(iter(rows.values())))
    summary = {c: round(float(np.mean([r[c] for r in rows.values()])), 4) for c in columns}
    spread = {c: round(float(np.std([r[c] for r in rows.values()])), 4) for c in columns}
    print("mean: " + "  ".join(f"{c} {v:.4f}" for c, v in summary.items()))
    print("sd:   " + "  ".join(f"{c} {v:.4f}" for c, v in spread.items()))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"tags": args.tags, "k": args.k, "folds": args.folds, "slice_smoothing": args.slice_smoothing,
                                           "averaging": "probabilities on the subject's grid",
                                           "mean_dice": summary, "sd_dice": spread,
                                           "subjects": {s: {c: round(v, 4) for c, v in r.items()} for s, r in rows.items()}},
                                          indent=1) + "\n")


if __name__ == "__main__":
    main()
