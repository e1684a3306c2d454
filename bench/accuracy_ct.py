"""Accuracy of CT liver models: 5-fold cross-validation by subject on the 30 BTCV CTs, and an external test.

Every fold model is scored on all slices of its six held-out BTCV subjects (Dice, HD95, ASSD) and on the
CHAOS CT sample (another hospital and scanner), and, beside each held-out subject, on that subject with a
liver-like mass pasted next to the liver (``synthetic_mass``: how much of a mass that is not liver the model
takes for liver). The fold ensemble (what ``ship`` writes) is scored on the CHAOS CT sample. Each fold is
one JSON file under ``--results``, so an interrupted run continues where it stopped::

    python bench/accuracy_ct.py --threads 1 cv --folds 0 2 4 &      # two processes use a 2-core machine best
    python bench/accuracy_ct.py --threads 1 cv --folds 1 3
    python bench/accuracy_ct.py report       # the CT section of docs/accuracy.md (bench/accuracy.py report)
    python bench/accuracy_ct.py ship         # fold ensemble -> LiverUNetLib/models/liver_ct_default.pt + card

``--set FIELD=VALUE`` and ``--tag`` work as in ``bench/accuracy.py``; the CT recipe (``CT_RECIPE``) differs
from the MRI one in its window ([-125, 275] HU, all this copy of BTCV holds), in epochs of exactly 256
slices (``every_slice_each_epoch`` off) and in scoring with the product's smoothing across slices.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.accuracy_recipe import Recipe, every_tenth_epoch, train_config  # noqa: E402
from bench.accuracy_scores import mean_sd, metrics_row  # noqa: E402
from LiverUNetLib.image_io import read_image  # noqa: E402
from LiverUNetLib.inference import InferenceConfig, segment_volume  # noqa: E402
from LiverUNetLib.labels import sparse_label_from_mask  # noqa: E402
from LiverUNetLib.volume import Volume  # noqa: E402

SHARED = Path(os.environ.get("LIVERUNET_DATA", ROOT.parent / "shared" / "data"))
BTCV = SHARED / "btcv-ct"
CHAOS_CT = SHARED / "chaos-ct-sample"
SUBJECTS = [f"{n:02d}" for n in range(30)]
FOLDS = 5
BTCV_LIVER = 6
# BTCV organs that sit beside the liver and can look like it, learnt as extra outputs when the recipe asks
# (neighbour_organs=5): spleen, right kidney, left kidney, gallbladder, stomach
BTCV_NEIGHBOURS = (1, 2, 3, 4, 7)
BTCV_RIGHT_KIDNEY = 2
RESULTS = ROOT / "docs" / "accuracy_results" / "ct"
MODELS = ROOT / "runs" / "accuracy_ct" / "models"
CT_MODEL = ROOT / "LiverUNetLib" / "models" / "liver_ct_default.pt"

CT_RECIPE = replace(Recipe(), epochs=120, boundary_weight=5.0, every_slice_each_epoch=False,
                    ct_window_low=-125.0, ct_window_high=275.0, slice_smoothing=True)


def fold_of(subject: str) -> int:
    order = np.random.default_rng(2015).permutation(len(SUBJECTS))
    return int(np.flatnonzero(order == SUBJECTS.index(subject))[0] % FOLDS)


def load_subject(subject: str) -> tuple[Volume, Volume, np.ndarray]:
    """The CT, its liver mask and the map of the neighbouring organs (renumbered 1..5, 0 elsewhere)."""
    image = read_image(BTCV / "images" / f"ct_{subject}.nii.gz")
    labels = read_image(BTCV / "labels" / f"label_{subject}.nii.gz").array
    liver = image.with_array((labels == BTCV_LIVER).astype(np.uint8))
    neighbours = np.zeros(labels.shape, np.uint8)
    for index, organ in enumerate(BTCV_NEIGHBOURS, start=1):
        neighbours[labels == organ] = index
    return image, liver, neighbours


def load_chaos_ct() -> tuple[Volume, Volume]:
    return read_image(CHAOS_CT / "dicom"), read_image(CHAOS_CT / "liver_gt.nii.gz")


def synthetic_mass(image: Volume, liver: Volume, neighbours: np.ndarray, radius_mm: float = 30.0,
                   seed: int = 0) -> tuple[Volume, np.ndarray]:
    """``image`` with a ball of liver-like intensity (the subject's own liver mean and spread) centred on the
    right kidney, where a renal or adrenal mass would sit, below the liver; never over the liver itself.
    Returns the image and the mask of the pasted voxels."""
    kidney = np.argwhere(neighbours == BTCV_NEIGHBOURS.index(BTCV_RIGHT_KIDNEY) + 1)
    centre = kidney.mean(axis=0) if len(kidney) else np.argwhere(liver.array > 0).mean(axis=0)
    grid = np.indices(image.array.shape, dtype=np.float32)
    spacing = np.asarray(image.spacing_kji, dtype=np.float32)[:, None, None, None]
    distance = np.sqrt((((grid - centre[:, None, None, None]) * spacing) ** 2).sum(axis=0))
    ball = (distance <= radius_mm) & (liver.array == 0)
    values = image.array[liver.array > 0].astype(np.float32)
    rng = np.random.default_rng(seed)
    pasted = image.array.astype(np.float32).copy()
    pasted[ball] = rng.normal(values.mean(), values.std(), int(ball.sum())).clip(-125, 275)
    return image.with_array(pasted), ball


def inference_config(recipe: Recipe) -> InferenceConfig:
    return InferenceConfig(device="cpu", slice_smoothing=recipe.slice_smoothing)


def model_path(tag: str, fold: int) -> Path:
    return MODELS / f"ct_cv{'_' + tag if tag else ''}_fold{fold}.pt"


def record_path(results: Path, tag: str, fold: int) -> Path:
    return results / f"ct_cv{'_' + tag if tag else ''}_fold{fold}.json"


def run_fold(fold: int, recipe: Recipe, results: Path, tag: str) -> None:
    from LiverUNetLib.training import TrainingCase, train

    out = record_path(results, tag, fold)
    if out.exists():
        return
    cases = []
    for s in (s for s in SUBJECTS if fold_of(s) != fold):
        image, liver, neighbours = load_subject(s)
        cases.append(TrainingCase(s, image, sparse_label_from_mask(image, liver, dense=True),
                                  neighbours if recipe.neighbour_organs else None))
    path = model_path(tag, fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trained = train(cases, train_config(recipe, seed=fold + 100 * recipe.seed, modality="ct"), path, resume=True,
                    progress=every_tenth_epoch(f"ct fold={fold}"))
    seconds = time.perf_counter() - started
    config = inference_config(recipe)
    rows, masses = {}, {}
    for s in (s for s in SUBJECTS if fold_of(s) == fold):
        image, liver, neighbours = load_subject(s)
        rows[s] = metrics_row(liver, segment_volume(image, path, config).mask)
        with_mass, ball = synthetic_mass(image, liver, neighbours)
        result = segment_volume(with_mass, path, config).mask
        masses[s] = {**metrics_row(liver, result),
                     "mass_ml": float(ball.sum() * np.prod(image.spacing_kji) / 1000),
                     "mass_taken_as_liver": float((result.array[ball] > 0).mean())}
        print(f"ct fold={fold} subject={s} dice={rows[s]['dice']:.4f} with mass {masses[s]['dice']:.4f} "
              f"(mass as liver {masses[s]['mass_taken_as_liver']:.1%})", flush=True)
    chaos_image, chaos_liver = load_chaos_ct()
    chaos = metrics_row(chaos_liver, segment_volume(chaos_image, path, config).mask)
    print(f"ct fold={fold} CHAOS CT dice={chaos['dice']:.4f}", flush=True)
    record = {"protocol": "ct_generalisation", "tag": tag, "fold": fold, "train_subjects": [c.name for c in cases],
              "train_seconds": round(seconds, 1), "device": trained.device, "epochs_run": trained.epochs_run,
              "recipe": asdict(recipe), "subjects": rows, "synthetic_mass": masses, "chaos_ct": chaos,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {_threads()}"}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def load_records(results: Path, tag: str) -> list[dict[str, Any]]:
    return [json.loads(record_path(results, tag, f).read_text()) for f in range(FOLDS)
            if record_path(results, tag, f).exists()]


def tags_measured(results: Path) -> list[str]:
    tags = {json.loads(p.read_text()).get("tag", "") for p in sorted(results.glob("ct_cv*_fold*.json"))}
    return sorted(tags, key=lambda t: (t != "", t))


def ensemble_record(results: Path, tag: str) -> Optional[dict[str, Any]]:
    path = results / f"ct_ensemble{'_' + tag if tag else ''}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fold_ensemble(tag: str):
    from LiverUNetLib.model_file import LiverModel, load_model

    models = [load_model(model_path(tag, f)) for f in range(FOLDS)]
    return LiverModel([m.networks[0] for m in models], models[0].network_config, models[0].preprocess)


def score_ensemble(recipe: Recipe, results: Path, tag: str) -> dict[str, Any]:
    """The fold ensemble on the CHAOS CT sample, timed end to end (cached as JSON)."""
    path = results / f"ct_ensemble{'_' + tag if tag else ''}.json"
    if path.exists():
        return json.loads(path.read_text())
    image, liver = load_chaos_ct()
    started = time.perf_counter()
    result = segment_volume(image, fold_ensemble(tag), inference_config(recipe))
    record = {"tag": tag, "chaos_ct": metrics_row(liver, result.mask), "seconds": round(time.perf_counter() - started, 1),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {_threads()}"}
    path.write_text(json.dumps(record, indent=1))
    return record


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [row for r in records for row in r["subjects"].values()]
    masses = [row for r in records for row in r.get("synthetic_mass", {}).values()]
    return {
        "subjects": len(rows),
        "dice": [x["dice"] for x in rows], "hd95": [x["hd95_mm"] for x in rows], "assd": [x["assd_mm"] for x in rows],
        "mass_dice": [x["dice"] for x in masses], "mass_as_liver": [x["mass_taken_as_liver"] for x in masses],
        "chaos_fold_dice": [r["chaos_ct"]["dice"] for r in records],
        "train_minutes": float(np.mean([r["train_seconds"] for r in records])) / 60,
    }


def report_lines(results: Path = RESULTS) -> list[str]:
    """The CT section of docs/accuracy.md, from the per-fold records (empty when none exist)."""
    tags = tags_measured(results) if results.is_dir() else []
    if not tags:
        return []
    machine = load_records(results, tags[0])[0].get("machine", "")
    lines = ["## CT: 5-fold cross-validation on 30 BTCV CTs, and the CHAOS CT sample", "",
             f"Measured by `bench/accuracy_ct.py` (commands in its docstring) on {machine}, no GPU. Data: "
             "`../shared/data/btcv-ct` (30 portal-venous CTs, manual labels, HU clipped to [-125, 275]; Landman et "
             "al. 2015) and `../shared/data/chaos-ct-sample` (one CT from another hospital, CC BY-NC-SA 4.0). Each "
             "fold model is scored on all slices of its 6 held-out subjects; *with a mass*: the same subjects with a "
             "30 mm ball of their own liver's intensity pasted on the right kidney (share of it taken for liver); "
             "*CHAOS CT*: each fold model, and the fold ensemble that ships.", "",
             "| recipe | folds | subjects | Dice | HD95 mm | ASSD mm | Dice with a mass | mass taken as liver | "
             "CHAOS CT, fold models | CHAOS CT, ensemble | train min / fold |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    per_subject = []
    for tag in tags:
        records = load_records(results, tag)
        s = summary(records)
        ensemble = ensemble_record(results, tag)
        ensemble_text = f"{ensemble['chaos_ct']['dice']:.3f}" if ensemble else "–"
        lines.append(f"| {tag or 'shipped CT recipe'} | {len(records)}/{FOLDS} | {s['subjects']} | {mean_sd(s['dice'])} | "
                     f"{mean_sd(s['hd95'])} | {mean_sd(s['assd'])} | {mean_sd(s['mass_dice'])} | "
                     f"{mean_sd(s['mass_as_liver'])} | {mean_sd(s['chaos_fold_dice'])} | {ensemble_text} | "
                     f"{s['train_minutes']:.0f} |")
        per = {k: v for r in records for k, v in r["subjects"].items()}
        per_subject.append(f"| {tag or 'shipped CT recipe'} | " + " | ".join(
            f"{per[k]['dice']:.3f}" if k in per else "–" for k in SUBJECTS) + " |")
    lines += ["", "Per subject (Dice):", "", "| recipe | " + " | ".join(SUBJECTS) + " |",
              "|---" * (len(SUBJECTS) + 1) + "|", *per_subject, ""]
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--tag", default="", help="name of a recipe variant (with --set), kept beside the default")
    sub = parser.add_subparsers(dest="command", required=True)
    cv = sub.add_parser("cv", help="train and score the folds (resumable)")
    cv.add_argument("--folds", type=int, nargs="+", default=list(range(FOLDS)))
    sub.add_parser("ensemble", help="score the fold ensemble on the CHAOS CT sample")
    sub.add_parser("report", help="print the CT section (bench/accuracy.py report writes it into docs/accuracy.md)")
    ship_parser = sub.add_parser("ship", help="ship the fold ensemble as the default CT model, with its card")
    ship_parser.add_argument("--destination", type=Path, default=CT_MODEL)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    recipe = CT_RECIPE.with_overrides(args.overrides)
    if args.command == "cv":
        for fold in args.folds:
            run_fold(fold, recipe, args.results, args.tag)
    elif args.command == "ensemble":
        print(json.dumps(score_ensemble(recipe, args.results, args.tag), indent=1))
    elif args.command == "report":
        print("\n".join(report_lines(args.results)))
    elif args.command == "ship":
        from bench.ship_ct import ship_ct

        ship_ct(args.results, args.tag, args.destination)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
