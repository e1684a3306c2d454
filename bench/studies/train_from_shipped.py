"""*Train* from three painted scans started from the shipped model: which schedule, scored on new subjects.

Reads the three-scan cross-validation records (``bench/accuracy.py generalisation --k 5 --train-subjects 3``; each
fold trains on the same three of its subjects, painted every 5th liver slice) of runs started from the shipped MRI
model's fold networks (``--init-fold-networks``, so no start saw the subjects scored), and prints one markdown row
per schedule against the schedule made for random weights (120 epochs at 2e-3) run from the same start, with
two references: the start network alone (the dense CV records of the shipped recipe) and the same three scans
trained from scratch::

    python bench/studies/train_from_shipped.py --results docs/accuracy_results/train_schedule \\
        --baseline e120_bw5_lfw_start --tags e30_lr5e-4_bw5_lfw_start e15_lr5e-4_bw5_lfw_start e30_bw5_lfw_start
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.accuracy_folds import FOLDS, experiment, load_records  # noqa: E402

REFERENCES = ROOT / "docs" / "accuracy_results"
START_NETWORKS = "e120_bw5"  # the shipped MRI recipe's dense CV: its fold networks are the shipped model's
FROM_SCRATCH = "e120_bw5_lfw_n3"  # the same three scans per fold, trained from random weights


def per_subject(results: Path, k: int, tag: str) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    records = load_records(results, f"{experiment(k, tag)}_fold*.json")
    return {s: row for r in records for s, row in r["subjects"].items()}, records


def row(name: str, scores: dict[str, dict[str, float]], baseline: Optional[dict[str, dict[str, float]]],
        records: list[dict[str, Any]]) -> str:
    subjects = sorted(scores, key=int)
    dice = np.array([scores[s]["dice"] for s in subjects])
    hd95 = np.array([scores[s]["hd95_mm"] for s in subjects])
    cells = [name, f"{len(records)} of {FOLDS}" if records else "-",
             f"**{dice.mean():.3f}** ± {dice.std():.3f}", f"{np.median(dice):.3f}",
             f"{dice.min():.3f} ({subjects[int(dice.argmin())]})", f"{np.nanmean(hd95[np.isfinite(hd95)]):.1f}"]
    if baseline is not None:
        shared = [s for s in subjects if s in baseline]
        diff = np.array([scores[s]["dice"] - baseline[s]["dice"] for s in shared])
        cells.append(f"{diff.mean():+.4f} ± {diff.std():.4f} ({(diff > 0).sum()} higher, {(diff < 0).sum()} lower, "
                     f"{len(shared)} subjects)")
    else:
        cells.append("")
    seconds = [r["train_seconds"] for r in records if "train_seconds" in r]
    cells.append(f"{min(seconds) / 60:.1f}-{max(seconds) / 60:.1f}" if seconds else "-")
    return "| " + " | ".join(cells) + " |"


def describe(records: list[dict[str, Any]]) -> str:
    """'30 epochs at 5e-4 from the shipped MRI model' from a run's records (recipe and start)."""
    recipe, start = records[0]["recipe"], records[0].get("initialised_from", "")
    origin = ("the shipped MRI model's fold network" if "network" in start else
              f"the model {Path(start).name}" if start else "random weights")
    return f"{recipe['epochs']} epochs at {recipe['learning_rate']:g} from {origin}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REFERENCES / "train_schedule")
    parser.add_argument("--baseline", default="e120_bw5_lfw_start", help="tag of the schedule compared against")
    parser.add_argument("--tags", nargs="+", default=[])
    args = parser.parse_args(argv)

    baseline, base_records = per_subject(args.results, 5, f"{args.baseline}_n3")
    subjects = set(baseline)
    start, _ = per_subject(REFERENCES, 1, START_NETWORKS)
    scratch, scratch_records = per_subject(REFERENCES, 5, FROM_SCRATCH)
    print("| schedule | folds | Dice | median | worst (subject) | HD95 mm | paired against the baseline | "
          "training min per fold |")
    print("|---|---|---|---|---|---|---|---|")
    print(row("the start network alone (no training)", {s: start[s] for s in subjects}, baseline, []))
    print(row("from scratch, 120 epochs at 2e-3", {s: scratch[s] for s in subjects}, baseline,
              [r for r in scratch_records if set(r["subjects"]) <= subjects]))
    print(row(f"baseline: {describe(base_records)}", baseline, None, base_records))
    for tag in args.tags:
        scores, records = per_subject(args.results, 5, f"{tag}_n3")
        print(row(f"{describe(records)} (`{tag}`)", scores, baseline, records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
