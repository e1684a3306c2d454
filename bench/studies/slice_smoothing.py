"""Does averaging each slice's probability with its neighbours' help? (the product's default)

A 2D network decides every slice on its own. ``postprocessing.smooth_across_slices`` averages each slice's
liver probability with its two neighbours' (1/4, 1/2, 1/4) before the threshold. For every held-out
subject of CV runs (dense, or painted every k-th slice with ``--k``) this scores the shipped
post-processing with and without that step (Dice, HD95, ASSD on the native grid), from the same cached
probabilities as ``bench/studies/ensemble_gain.py``, so it costs no training::

    python bench/studies/slice_smoothing.py --tags e120_bw5 e120 --output docs/accuracy_results/slice_smoothing.json
    python bench/studies/slice_smoothing.py --k 5 --tags e120_bw5 e120      # the models trained on every 5th slice
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.accuracy import SUBJECTS, fold_model_path, fold_of, load_subject, metrics_row  # noqa: E402
from bench.studies.ensemble_gain import add_probability_cache_arguments, held_out_probability, liver_mask, probability_cache  # noqa: E402
from LiverUNetLib.volume import Volume  # noqa: E402

VARIANTS = ("plain", "smoothed")


def score_variants(probability: np.ndarray, liver: Volume, slice_axis: int) -> dict[str, dict[str, float]]:
    """Dice, HD95 and ASSD of the mask without and with smoothing across slices."""
    masks = {"plain": liver_mask(probability), "smoothed": liver_mask(probability, smoothing_axis=slice_axis)}
    return {name: metrics_row(liver, liver.with_array(mask.astype(np.uint8))) for name, mask in masks.items()}


def summarise(rows: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean of each metric per variant, the paired Dice change and how many subjects it raised or lowered."""
    summary = {name: {metric: round(float(np.mean([r[name][metric] for r in rows.values()])), 4)
                      for metric in ("dice", "hd95_mm", "assd_mm")} for name in VARIANTS}
    for name in VARIANTS:
        summary[name]["dice_sd"] = round(float(np.std([r[name]["dice"] for r in rows.values()])), 4)
    change = np.array([r["smoothed"]["dice"] - r["plain"]["dice"] for r in rows.values()])
    summary["dice_change"] = {"mean": round(float(change.mean()), 4), "sd": round(float(change.std()), 4),
                              "raised": int((change > 0).sum()), "lowered": int((change < 0).sum())}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", nargs="+", required=True, help="recipe tags of CV runs")
    parser.add_argument("--k", type=int, default=1, help="the CV runs painted every k-th slice (default 1: dense)")
    add_probability_cache_arguments(parser)
    parser.add_argument("--output", type=Path, help="write per-subject and summary figures as JSON here")
    args = parser.parse_args()
    cache = probability_cache(args)
    for tag in args.tags:
        missing = [s for s in SUBJECTS if not fold_model_path(args.results, args.k, tag, fold_of(s)).exists()]
        if missing:
            raise SystemExit(f"no k={args.k} fold model for tag {tag!r} covering subjects {missing}; run its CV first")
    per_tag: dict[str, dict[str, dict[str, dict[str, float]]]] = {tag: {} for tag in args.tags}
    for subject in SUBJECTS:
        image, _, liver = load_subject(subject)
        for tag in args.tags:
            probability = held_out_probability(args.results, tag, subject, image, cache, args.k)
            row = score_variants(probability, liver, image.slice_axis())
            per_tag[tag][subject] = row
            print(f"{tag} subject {subject}: Dice {row['plain']['dice']:.4f} -> {row['smoothed']['dice']:.4f}", flush=True)
    report = {}
    for tag, rows in per_tag.items():
        summary = summarise(rows)
        report[tag] = {"summary": summary, "subjects": {s: {v: {m: round(x, 4) for m, x in r[v].items()} for v in VARIANTS}
                                                         for s, r in rows.items()}}
        change = summary["dice_change"]
        print(f"{tag}: Dice {summary['plain']['dice']:.4f} -> {summary['smoothed']['dice']:.4f} "
              f"(change {change['mean']:+.4f} ± {change['sd']:.4f}; raised {change['raised']}, lowered {change['lowered']}); "
              f"HD95 {summary['plain']['hd95_mm']:.1f} -> {summary['smoothed']['hd95_mm']:.1f} mm; "
              f"ASSD {summary['plain']['assd_mm']:.2f} -> {summary['smoothed']['assd_mm']:.2f} mm")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"tags": args.tags, "k": args.k, "kernel": "1/4, 1/2, 1/4 across slices, before the 0.5 threshold",
                                           **report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
