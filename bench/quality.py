"""Is the quality estimate right? Held-out results of both cross-validations, hard inputs, and "paint next here".

Commands (results in ``docs/accuracy_results/quality/``, each step cached, so an interrupted run continues)::

    python bench/quality.py --threads 1 collect     # segment every held-out subject (clean + hard inputs) and the unseen inputs
    python bench/quality.py calibrate               # leave-one-subject-out scores, the calibration per model, docs/quality.md
    python bench/quality.py calibrate --write-models  # and keep each calibration in its shipped model's card
    python bench/quality.py --threads 1 speed       # what the estimate costs beside inference (shipped models)
    python bench/quality.py --threads 1 fill --mri 3 15 21 32 38 --ct-sample --btcv 08 14 21   # paint next here
    python bench/quality.py report                  # docs/quality.md from whatever is measured

What is measured and why: docs/quality.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "docs" / "accuracy_results" / "quality"
REPORT = ROOT / "docs" / "quality.md"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch threads (1 on a shared 2-core machine)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    commands = parser.add_subparsers(dest="command", required=True)
    collect = commands.add_parser("collect", help="segment the held-out subjects, hard inputs and unseen inputs")
    collect.add_argument("--datasets", nargs="+", choices=("mri", "ct"), default=["mri", "ct"])
    calibrate = commands.add_parser("calibrate", help="score the estimate held out and fit each model's calibration")
    calibrate.add_argument("--write-models", action="store_true",
                           help="re-save the shipped models with their calibration in the card (weights unchanged)")
    commands.add_parser("speed", help="time inference with and without the estimate")
    fill = commands.add_parser("fill", help="paint next here: uncertainty against the middles of the largest gaps")
    fill.add_argument("--mri", nargs="*", default=[], metavar="SUBJECT")
    fill.add_argument("--btcv", nargs="*", default=[], metavar="SUBJECT")
    fill.add_argument("--ct-sample", action="store_true", help="the CHAOS CT sample, from the shipped CT model")
    fill.add_argument("--k", type=int, default=10, help="every k-th liver slice painted first")
    fill.add_argument("--added", type=int, nargs="+", default=[1, 2, 4], help="slices added to the painting")
    commands.add_parser("report", help="write docs/quality.md from the measured results")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "collect":
        from bench.quality_cases import collect_held_out, collect_unseen

        for _ in collect_held_out(args.results, tuple(args.datasets)):
            pass
        collect_unseen(args.results)
        return 0
    if args.command == "calibrate":
        from bench.quality_scores import calibrate_models

        calibrate_models(args.results, write_models=args.write_models)
    elif args.command == "speed":
        from bench.quality_speed import measure_speed

        measure_speed(args.results)
    elif args.command == "fill":
        from bench.quality_fill import run_fills

        run_fills(args.results, args.mri, args.btcv, args.ct_sample, args.k, args.added)
    from bench.quality_report import write_report

    write_report(args.results, REPORT)
    print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
