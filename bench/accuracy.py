"""Reproducible accuracy benchmark on CHAOS MRI T2-SPIR (issue "Real-data accuracy").

Two protocols, each experiment cached as one JSON file under ``--results`` so a long run can be
stopped and continued, and the report rebuilt from whatever has finished:

* ``generalisation``: cross-validation by subject (5 folds of 3 subjects). Training subjects keep
  their label only on every k-th liver slice; held-out subjects are scored on all slices.
* ``densify``: per subject, paint every k-th liver slice, train on those slices (from scratch, or
  fine-tuned from the cross-validation model that never saw the subject) and score the unpainted
  slices, beside ITK's morphological contour interpolation (what Slicer's "Fill between slices" uses).

Commands (``all`` runs the first three in a row; ``--threads 1`` and two processes side by side use a
2-core machine best)::

    python bench/accuracy.py all               # everything below but ship, resumable
    python bench/accuracy.py generalisation --k 1 5 3
    python bench/accuracy.py generalisation --k 5 --train-subjects 3   # a model from a few painted scans
    python bench/accuracy.py generalisation --k 5 --train-subjects 3 --tag T \
        --init-fold-networks LiverUNetLib/models/liver_mri_t2_default.pt  # ... started from the shipped model
    python bench/accuracy.py densify --k 5 10 3 --modes mci finetune scratch
    python bench/accuracy.py report            # docs/accuracy.md + docs/accuracy.png
    python bench/accuracy.py ship --k 1        # fold ensemble -> shipped default model
    python bench/accuracy.py ship --k 1 --tag T --all-subjects   # or one network trained on all 15 subjects
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Each piece has its own file; the names below stay importable from bench.accuracy, which the studies,
# bench/accuracy_ct.py, bench/ct_fill.py and the tests use.
from bench.accuracy_densify import DENSIFY_MODES, contour_interpolation, densify_config, run_densify  # noqa: E402
from bench.accuracy_folds import (DATA, FOLDS, SUBJECTS, experiment, fold_model_path, fold_of,  # noqa: E402
                                  load_records, load_subject, neighbour_organ_map, tagged, trained_on_few,
                                  training_case, training_subjects)
from bench.accuracy_generalisation import (fill_model_for, held_out_mask, run_generalisation,  # noqa: E402
                                           self_trained_label)
from bench.accuracy_recipe import Recipe, every_tenth_epoch, inference_config, train_config  # noqa: E402
from bench.accuracy_report import REPORTED_MODES, report  # noqa: E402
from bench.accuracy_scores import mask_dice, mean_sd, metrics_row  # noqa: E402
from bench.accuracy_ship import ship, ship_command, train_on_all_subjects  # noqa: E402

__all__ = ["DENSIFY_MODES", "contour_interpolation", "densify_config", "run_densify", "DATA", "FOLDS",
           "SUBJECTS", "experiment", "fold_model_path", "fold_of", "load_records", "load_subject",
           "neighbour_organ_map", "tagged", "trained_on_few", "training_case", "training_subjects",
           "fill_model_for", "held_out_mask", "run_generalisation", "self_trained_label", "Recipe",
           "every_tenth_epoch", "inference_config", "train_config", "REPORTED_MODES", "report", "mask_dice",
           "mean_sd", "metrics_row", "ship", "ship_command", "train_on_all_subjects", "main"]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "accuracy")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a Recipe field (repeatable), e.g. --set epochs=60 --set appearance_augmentation=false")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generalisation")
    g.add_argument("--k", type=int, nargs="+", default=[1, 3, 5])
    g.add_argument("--folds", type=int, nargs="+", default=list(range(FOLDS)))
    g.add_argument("--tag", default="", help="name of a recipe variant (with --set), kept beside the default run")
    g.add_argument("--self-train-from", default="", metavar="TAG",
                   help="self-training: that run's k fold models fill the unpainted training slices and are fine-tuned on them")
    g.add_argument("--train-subjects", type=int, default=None, metavar="N",
                   help="train each fold on N of its subjects only (a few painted scans); adds _nN to the tag")
    g.add_argument("--init-model", type=Path, default=None, metavar="MODEL",
                   help="start every fold from this model's networks (e.g. LiverUNetLib/models/liver_ct_default.pt)")
    g.add_argument("--init-fold-networks", type=Path, default=None, metavar="MODEL",
                   help="start fold f from network f of this fold ensemble, which never saw fold f's held-out subjects "
                        "(the shipped MRI model: *Train* started from the shipped model, scored on new subjects)")
    g.add_argument("--fill-per-subject", action="store_true",
                   help="with --self-train-from: fine-tune the fold model on each subject's painted slices before it fills them")
    d = sub.add_parser("densify")
    d.add_argument("--k", type=int, nargs="+", default=[3, 5, 10])
    d.add_argument("--modes", nargs="+", default=["mci", "finetune", "scratch"], choices=DENSIFY_MODES,
                   help="base: the CV model alone, painted slices pasted in (what fine-tuning adds is measured against it); "
                   "finetune_mean: the fine-tuned network averaged with the CV network it started from")
    d.add_argument("--subjects", nargs="+", default=SUBJECTS)
    d.add_argument("--tag", default="", help="fine-tune from (or, with base, use) this recipe variant's k=1 CV models (generalisation --tag)")
    r = sub.add_parser("report")
    r.add_argument("--output", type=Path, default=ROOT / "docs" / "accuracy.md")
    a = sub.add_parser("all", help="generalisation k=1,3,5, densify k=3,5,10 (all modes), then the report")
    a.add_argument("--output", type=Path, default=ROOT / "docs" / "accuracy.md")
    s = sub.add_parser("ship")
    s.add_argument("--k", type=int, default=1)
    s.add_argument("--tag", default="", help="ship the cross-validation run of this recipe variant")
    s.add_argument("--all-subjects", action="store_true",
                   help="ship one network trained on all subjects with the cross-validation run's recipe instead of its fold ensemble")
    s.add_argument("--destination", type=Path, default=ROOT / "LiverUNetLib" / "models" / "liver_mri_t2_default.pt")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    recipe = Recipe().with_overrides(args.overrides)
    (args.results / "models").mkdir(parents=True, exist_ok=True)
    if args.command == "generalisation":
        for k in args.k:
            tag = args.tag
            if args.train_subjects is not None:
                tag = tagged(tag, f"n{args.train_subjects}") if tag else f"n{args.train_subjects}"
            run_generalisation(k, recipe, args.results, args.folds, tag, args.self_train_from, args.fill_per_subject,
                               args.train_subjects, args.init_model, args.init_fold_networks)
    elif args.command == "densify":
        for k in args.k:
            run_densify(k, args.modes, recipe, args.results, args.subjects, args.tag)
    elif args.command == "report":
        report(args.results, args.output)
    elif args.command == "all":
        for k in (1, 3, 5):
            run_generalisation(k, recipe, args.results, list(range(FOLDS)))
        for k in (3, 5, 10):
            run_densify(k, ["mci", "finetune", "scratch"], recipe, args.results, SUBJECTS)
        report(args.results, args.output)
    elif args.command == "ship":
        ship(args.k, args.results, args.destination, args.tag, args.all_subjects)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
