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
    python bench/accuracy.py densify --k 5 10 3 --modes mci finetune scratch
    python bench/accuracy.py report            # docs/accuracy.md + docs/accuracy.png
    python bench/accuracy.py ship --k 1        # fold ensemble -> shipped default model
    python bench/accuracy.py ship --k 1 --tag T --all-subjects   # or one network trained on all 15 subjects
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.product_fills import PRODUCT_MODE, product_fill_records  # noqa: E402
from LiverUNetLib.fill_recipe import FILL_RECIPE  # noqa: E402
from LiverUNetLib.image_io import read_image  # noqa: E402
from LiverUNetLib.inference import InferenceConfig, segment_volume  # noqa: E402
from LiverUNetLib.labels import SparseLabel, sparse_label_from_mask  # noqa: E402
from LiverUNetLib.metrics import evaluate  # noqa: E402
from LiverUNetLib.volume import Volume  # noqa: E402

DATA = Path(os.environ.get("LIVERUNET_DATA", ROOT.parent / "shared" / "data")) / "chaos-mr-t2"
SUBJECTS = ["3", "5", "13", "15", "19", "20", "21", "22", "31", "32", "34", "36", "37", "38", "39"]
FOLDS = 5
DENSIFY_MODES = ["mci", "base", "finetune", "finetune_mean", "scratch"]
REPORTED_MODES = DENSIFY_MODES + [PRODUCT_MODE]  # the product's fills are assembled, never run by mode


@dataclass
class Recipe:
    """The training recipe under test (also the default model's recipe)."""

    epochs: int = 40
    samples_per_epoch: int = 256
    base_channels: int = 16
    depth: int = 4
    normalization: str = "batch"  # batch, instance or group (LiverUNetLib.networks.Normalization)
    boundary_weight: float = 0.0  # U-Net paper's border weighting of the BCE term (w0); 0 off
    liver_free_beyond_painting: bool = False  # slices beyond the painting by more than its interval: no liver
    in_plane_spacing_mm: float = 2.5
    context_slices: int = 1
    crop_size: int = 128
    learning_rate: float = 2e-3
    # densifying: the values Slicer's "Fill from painted slices" uses (LiverUNetLib/fill_recipe.py)
    finetune_epochs: int = FILL_RECIPE.finetune_epochs
    finetune_learning_rate: float = FILL_RECIPE.finetune_learning_rate
    scratch_epochs: int = FILL_RECIPE.scratch_epochs
    intensity_region: str = "body"
    appearance_augmentation: bool = True
    bias_field_augmentation: bool = False  # MRI coil shading (augmentation.RandomBiasField)
    augmentation_strength: float = 1.0  # geometry and intensity transforms; 0 off, 2 strongest
    mixed_precision: bool = True  # bfloat16 autocast on GPUs and on CPUs with AMX / AVX-512-BF16
    # densifying learns one scan's own appearance: appearance transforms only slow the fit there
    densify_appearance_augmentation: bool = FILL_RECIPE.appearance_augmentation
    # the fill's fine-tuned network averaged with the CV network it started from, as the product's fill does;
    # false repeats the fills without that guard (densify_liver_free/)
    densify_keep_start_network: bool = FILL_RECIPE.keep_start_network
    seed: int = 0  # another value repeats a run with other random draws (run-to-run spread)
    networks_per_fold: int = 1  # networks from different random starts, averaged (TrainConfig.networks_per_fold)
    # 3: both kidneys and the spleen (the CHAOS labels 2-4) as extra outputs learnt beside the liver
    # (TrainConfig.neighbour_organs); their labels are read on the painted slices only, like the liver's
    neighbour_organs: int = 0
    # the product averages neighbouring slices' probabilities before the threshold (InferenceConfig); off
    # here so every row stays comparable with the rows scored without it (its gain: bench/studies/slice_smoothing.py)
    slice_smoothing: bool = False
    # 0: each fold trains on all its subjects and keeps the last epoch (every CV row). Above 0: that share
    # of them is held out for a validation Dice, the best checkpoint is kept and training stops after
    # ``patience`` epochs without gain, as the product's *Train* does (TrainConfig: 0.2 and 15, only from five
    # cases up, and only checkpoints of the annealed phase: training.checkpoint_selectable)
    validation_fraction: float = 0.0
    patience: int = 0
    # an epoch draws at least every annotated slice (True, every MRI row) or exactly samples_per_epoch (the CT
    # recipe: training length independent of how many slices are labelled; TrainConfig.every_slice_each_epoch)
    every_slice_each_epoch: bool = True
    # the CT intensity window in Hounsfield units (TrainConfig.ct_window); MRI ignores it
    ct_window_low: float = -200.0
    ct_window_high: float = 300.0

    def with_overrides(self, pairs: list[str]) -> "Recipe":
        """``["epochs=60", "intensity_region=volume"]`` -> a recipe with those fields changed (typed)."""
        values = asdict(self)
        for pair in pairs:
            key, sep, text = pair.partition("=")
            if not sep or key not in values:
                raise SystemExit(f"--set expects field=value with a Recipe field ({', '.join(values)}); got {pair!r}")
            kind = type(values[key])
            values[key] = text.lower() in ("1", "true", "yes") if kind is bool else kind(text)
        return Recipe(**values)

    @classmethod
    def from_record(cls, recipe: dict[str, Any]) -> "Recipe":
        """The recipe stored in a result file (fields added since take their defaults; removed ones are ignored)."""
        fields = asdict(cls())
        return cls(**{key: value for key, value in recipe.items() if key in fields})


def load_subject(subject: str) -> tuple[Volume, SparseLabel, Volume]:
    image = read_image(DATA / "images" / f"image_{subject}.nii.gz")
    label = read_image(DATA / "labels" / f"label_{subject}.nii.gz")
    liver = label.with_array((label.array == 1).astype(np.uint8))
    dense = sparse_label_from_mask(image, liver, dense=True)
    return image, dense, liver


def neighbour_organ_map(subject: str) -> np.ndarray:
    """CHAOS organs other than the liver, renumbered 1-3 (right kidney, left kidney, spleen)."""
    label = read_image(DATA / "labels" / f"label_{subject}.nii.gz").array
    return np.where(label > 1, label - 1, 0).astype(np.uint8)


def training_case(subject: str, image: Volume, label: SparseLabel, recipe: Recipe):
    """A training case, with the neighbouring organs when the recipe learns them."""
    from LiverUNetLib.training import TrainingCase

    return TrainingCase(subject, image, label, neighbour_organ_map(subject) if recipe.neighbour_organs else None)


def fold_of(subject: str) -> int:
    order = np.random.default_rng(2019).permutation(len(SUBJECTS))
    return int(np.flatnonzero(order == SUBJECTS.index(subject))[0] % FOLDS)


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = a.sum() + b.sum()
    return float(1.0 if total == 0 else 2 * (a & b).sum() / total)


def metrics_row(reference: Volume, prediction: Volume, slices: Optional[np.ndarray] = None) -> dict[str, float]:
    """Dice/HD95/ASSD of the whole volume, and Dice restricted to ``slices`` when given."""
    m = evaluate(reference, prediction)
    row = {"dice": m.dice, "hd95_mm": m.hd95_mm, "assd_mm": m.assd_mm, "volume_ml": m.volume_ml}
    if slices is not None:
        axis = reference.slice_axis()
        ref = np.take(reference.array > 0, slices, axis=axis)
        pred = np.take(prediction.array > 0, slices, axis=axis)
        row["dice_scored_slices"] = mask_dice(ref, pred)
    return row


def train_config(recipe: Recipe, seed: int, **overrides: Any):
    from LiverUNetLib.training import TrainConfig

    values = dict(
        epochs=recipe.epochs,
        samples_per_epoch=recipe.samples_per_epoch,
        base_channels=recipe.base_channels,
        depth=recipe.depth,
        normalization=recipe.normalization,
        boundary_weight=recipe.boundary_weight,
        liver_free_beyond_painting=recipe.liver_free_beyond_painting,
        in_plane_spacing_mm=recipe.in_plane_spacing_mm,
        context_slices=recipe.context_slices,
        crop_size=recipe.crop_size,
        learning_rate=recipe.learning_rate,
        intensity_region=recipe.intensity_region,
        appearance_augmentation=recipe.appearance_augmentation,
        bias_field_augmentation=recipe.bias_field_augmentation,
        augmentation_strength=recipe.augmentation_strength,
        mixed_precision=recipe.mixed_precision,
        validation_fraction=recipe.validation_fraction,
        patience=recipe.patience,
        seed=seed,
        networks_per_fold=recipe.networks_per_fold,
        neighbour_organs=recipe.neighbour_organs,
        every_slice_each_epoch=recipe.every_slice_each_epoch,
        ct_window=(recipe.ct_window_low, recipe.ct_window_high),
        save_half_precision=True,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _tagged(stem: str, tag: str) -> str:
    """A tag keeps a recipe variant's files beside the default run's."""
    return stem + (f"_{tag}" if tag else "")


def _experiment(k: int, tag: str) -> str:
    """File stem of a cross-validation experiment."""
    return _tagged(f"generalisation_k{k}", tag)


def fold_model_path(results: Path, k: int, tag: str, fold: int) -> Path:
    """Where a cross-validation fold model is kept."""
    return results / "models" / f"{_experiment(k, tag)}_fold{fold}.pt"


def inference_config(recipe: Recipe) -> InferenceConfig:
    """How the benchmark segments: on the CPU, with the recipe's post-processing."""
    return InferenceConfig(device="cpu", slice_smoothing=recipe.slice_smoothing)


def held_out_mask(results: Path, subject: str, tag: str = "", recipe: Optional[Recipe] = None) -> np.ndarray:
    """The liver mask (KJI) of the dense CV fold model that never saw ``subject``."""
    image, _, _ = load_subject(subject)
    model = fold_model_path(results, 1, tag, fold_of(subject))
    return segment_volume(image, model, inference_config(recipe or Recipe())).mask.array > 0


def self_trained_label(image: Volume, painted: SparseLabel, liver: Volume, model: Path,
                       recipe: Optional[Recipe] = None) -> tuple[SparseLabel, float]:
    """Self-training: ``model`` fills the unpainted slices; painted slices keep their paint.

    Returns the label (every slice now counts as painted) and, for the report only, the Dice of the
    filled-in slices against the manual labels, which the training never sees.
    """
    predicted = segment_volume(image, model, inference_config(recipe or Recipe())).mask.array > 0
    axis = image.slice_axis()
    index = [slice(None)] * 3
    index[axis] = painted.annotated
    filled = predicted.copy()
    filled[tuple(index)] = painted.mask[tuple(index)]
    unpainted = np.setdiff1d(np.arange(filled.shape[axis]), painted.annotated)
    quality = mask_dice(np.take(liver.array > 0, unpainted, axis=axis), np.take(predicted, unpainted, axis=axis))
    label = sparse_label_from_mask(image, image.with_array(filled.astype(np.uint8)), dense=True)
    return label, quality


def densify_config(recipe: Recipe, fine_tune: bool, keep_start: Optional[bool] = None):
    """Training settings for densifying one volume (fine-tuned from a model, or from scratch);
    ``keep_start`` overrides the recipe's choice of averaging the tuned network with its start."""
    appearance = dict(appearance_augmentation=recipe.densify_appearance_augmentation,
                      bias_field_augmentation=recipe.densify_appearance_augmentation and recipe.bias_field_augmentation)
    # seed 0 unless the recipe asks for other draws (the fill's run-to-run spread); one network, as
    # Slicer's fill trains (LiverUNetLib/fill_recipe.py), on the painted liver alone (no other organ is painted)
    if fine_tune:
        return train_config(recipe, seed=recipe.seed, epochs=recipe.finetune_epochs,
                            learning_rate=recipe.finetune_learning_rate, networks_per_fold=1, neighbour_organs=0,
                            keep_start_networks=recipe.densify_keep_start_network if keep_start is None else keep_start,
                            **appearance)
    return train_config(recipe, seed=recipe.seed, epochs=recipe.scratch_epochs, networks_per_fold=1,
                        neighbour_organs=0, **appearance)


def fill_model_for(image: Volume, painted: SparseLabel, subject: str, base: Path, recipe: Recipe, results: Path) -> Path:
    """``base`` fine-tuned on one subject's painted slices, as Slicer's "Fill from painted slices" does."""
    from LiverUNetLib.training import TrainingCase, train

    path = results / "models" / f"fill_{subject}_{base.stem}.pt"
    train([TrainingCase(subject, image, painted)], densify_config(recipe, fine_tune=True), path, init_model=base, resume=False)
    return path


def _every_tenth_epoch(prefix: str) -> Callable[[Any], None]:
    """A training progress callback that prints every tenth epoch's loss."""
    def report(event: Any) -> None:
        if event.epoch and event.epoch % 10 == 0:
            print(f"  {prefix} {event.message} loss={event.loss}", flush=True)
    return report


def training_subjects(fold: int, count: Optional[int] = None) -> list[str]:
    """The subjects a fold trains on: all that are not held out, or ``count`` of them (a few scans).

    The few are drawn by a fixed permutation per fold, and a smaller count is a subset of a larger one, so
    the learning curve changes only how many scans are painted, not which."""
    subjects = [s for s in SUBJECTS if fold_of(s) != fold]
    if count is None:
        return subjects
    if not 1 <= count <= len(subjects):
        raise SystemExit(f"--train-subjects must be between 1 and {len(subjects)} (got {count})")
    order = np.random.default_rng(1000 + fold).permutation(len(subjects))
    return [subjects[i] for i in sorted(order[:count])]


def run_generalisation(k: int, recipe: Recipe, results: Path, folds: list[int], tag: str = "",
                       self_train_from: str = "", fill_per_subject: bool = False,
                       train_subjects: Optional[int] = None, init_model: Optional[Path] = None) -> None:
    """``train_subjects``: train on that many of the fold's subjects only (how a model from a few painted
    scans does on new ones); the held-out subjects and their scoring are unchanged.
    ``self_train_from``: a tag of a finished k-sparse run. Its fold model fills the unpainted slices of the
    fold's training subjects and is fine-tuned (``recipe.epochs``) on painted plus filled slices.
    ``fill_per_subject``: each subject is filled by that model fine-tuned on the subject's own painted
    slices first (densify, then train: what a user can do in Slicer with "Fill from painted slices").
    ``init_model``: every fold starts from this model's networks instead of random weights (for example the
    shipped CT model: does MRI training gain from what it learnt on CT?)."""
    from LiverUNetLib.training import split_cases, train

    for fold in folds:
        out = results / f"{_experiment(k, tag)}_fold{fold}.json"
        if out.exists():
            continue
        test = [s for s in SUBJECTS if fold_of(s) == fold]
        init = fold_model_path(results, k, self_train_from, fold) if self_train_from else None
        if init is not None and not init.exists():
            raise SystemExit(f"self-training needs {init}: run generalisation --k {k} --tag {self_train_from} first")
        cases, fill_quality, painted_slices = [], {}, 0
        for s in training_subjects(fold, train_subjects):
            image, dense, liver = load_subject(s)
            label = dense if k == 1 else dense.keep_every_k(k)
            painted_slices += label.annotated_count
            if init is not None:
                filler = fill_model_for(image, label, s, init, recipe, results) if fill_per_subject else init
                label, fill_quality[s] = self_trained_label(image, label, liver, filler, recipe)
                if filler != init:
                    filler.unlink()
            cases.append(training_case(s, image, label, recipe))
        model_path = fold_model_path(results, k, tag, fold)
        started = time.perf_counter()
        config = train_config(recipe, seed=fold + 100 * recipe.seed)
        trained = train(cases, config, model_path, init_model=init if init is not None else init_model, resume=True,
                        progress=_every_tenth_epoch(f"k={k} fold={fold}"))
        seconds = time.perf_counter() - started
        rows = {}
        for s in test:
            image, _, liver = load_subject(s)
            result = segment_volume(image, model_path, inference_config(recipe))
            rows[s] = metrics_row(liver, result.mask)
            print(f"k={k} fold={fold} subject={s} dice={rows[s]['dice']:.4f}", flush=True)
        record = {
            "protocol": "generalisation", "k": k, "tag": tag, "fold": fold, "test_subjects": test,
            "annotated_slices": painted_slices,  # painted by hand; self-training fills the rest
            "train_subjects": [case.name for case in cases],
            **({"self_trained_from": self_train_from, "fill_per_subject": fill_per_subject,
                "fill_dice_unpainted": fill_quality} if init is not None else {}),
            **({"initialised_from": str(init_model)} if init_model is not None else {}),
            "train_seconds": round(seconds, 1), "device": trained.device, "recipe": asdict(recipe),
            **({"validation_subjects": [cases[i].name for i in split_cases(len(cases), config)[0][1]],
                "validation_dice": trained.validation_dice, "epochs_run": trained.epochs_run}
               if recipe.validation_fraction > 0 else {}),
            "subjects": rows,
        }
        out.write_text(json.dumps(record, indent=1))


def contour_interpolation(liver: Volume, painted: np.ndarray) -> np.ndarray:
    """ITK MorphologicalContourInterpolator on the painted slices (Slicer's "Fill between slices")."""
    from bench.contour_interpolation import interpolate

    axis = liver.slice_axis()
    sparse = np.zeros_like(liver.array, dtype=np.uint8)
    index = [slice(None)] * 3
    index[axis] = painted
    sparse[tuple(index)] = liver.array[tuple(index)]
    return interpolate(sparse, axis)


def run_densify(k: int, modes: list[str], recipe: Recipe, results: Path, subjects: list[str], base_tag: str = "") -> None:
    """``base_tag``: fine-tune from (mode base: only run) that recipe variant's k=1 CV models (results kept apart by tag)."""
    from LiverUNetLib.training import TrainingCase, train

    for s in subjects:
        image, dense, liver = load_subject(s)
        sparse = dense.keep_every_k(k)
        axis = image.slice_axis()
        unpainted = np.setdiff1d(np.arange(image.array.shape[axis]), sparse.annotated)
        index = [slice(None)] * 3
        index[axis] = sparse.annotated
        for mode in modes:
            uses_cv_model = mode in ("base", "finetune", "finetune_mean")
            tag = base_tag if uses_cv_model else ""
            out = results / f"{_tagged(f'densify_k{k}_{mode}', tag)}_s{s}.json"
            if out.exists():
                continue
            cv_model = fold_model_path(results, 1, tag, fold_of(s)) if uses_cv_model else None
            if cv_model is not None and not cv_model.exists():
                print(f"skip {mode} for {s}: {cv_model} missing (run generalisation --k 1 first)")
                continue
            started = time.perf_counter()
            if mode == "mci":
                filled = contour_interpolation(liver, sparse.annotated)
            elif mode == "base":  # what fine-tuning has to add: the CV model alone, no training
                filled = segment_volume(image, cv_model, inference_config(recipe)).mask.array.copy()
            else:
                # finetune_mean keeps the start network whatever the recipe says (measured before it was the fill's default)
                config = densify_config(recipe, fine_tune=mode != "scratch", keep_start=True if mode == "finetune_mean" else None)
                model_path = results / "models" / f"densify_{mode}_k{k}_s{s}.pt"
                train([TrainingCase(s, image, sparse)], config, model_path, init_model=cv_model, resume=False)
                filled = segment_volume(image, model_path, inference_config(recipe)).mask.array.copy()
                model_path.unlink(missing_ok=True)
            filled[tuple(index)] = liver.array[tuple(index)]  # painted slices stay as painted
            row = metrics_row(liver, liver.with_array(filled), unpainted)
            record = {"protocol": "densify", "k": k, "mode": mode, "tag": tag, "subject": s,
                      "painted": sparse.annotated.tolist(), "seconds": round(time.perf_counter() - started, 1), **row}
            out.write_text(json.dumps(record, indent=1))
            print(f"densify k={k} {mode} subject={s} dice_unpainted={row['dice_scored_slices']:.4f}", flush=True)


def _load(results: Path, pattern: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(results.glob(pattern))]


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "–"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def _per_subject_table(title: str, per: dict[str, dict[str, Any]], dice_key: str) -> list[str]:
    """A collapsed per-subject table (Dice, HD95, ASSD) with the mean ± sd row."""
    order = [s for s in SUBJECTS if s in per]
    lines = ["<details><summary>" + title + "</summary>", "", "| subject | Dice | HD95 mm | ASSD mm |", "|---|---|---|---|"]
    for s in order:
        row = per[s]
        lines.append(f"| {s} | {row[dice_key]:.3f} | {row['hd95_mm']:.1f} | {row['assd_mm']:.2f} |")
    lines.append(f"| mean ± sd | {_mean_sd([per[s][dice_key] for s in order])} | "
                 f"{_mean_sd([per[s]['hd95_mm'] for s in order])} | {_mean_sd([per[s]['assd_mm'] for s in order])} |")
    return lines + ["", "</details>", ""]


def _trained_on_few(record: dict[str, Any]) -> bool:
    """True for a fold that trained on only some of its subjects (--train-subjects)."""
    return "train_subjects" in record and len(record["train_subjects"]) < len(SUBJECTS) - len(record["test_subjects"])


def _few_subjects(records: list[dict[str, Any]]) -> str:
    """'; 3 training subjects' for a few-scans run (--train-subjects), '; 1 of them validating' for a run
    with the product's validation hold-out (--set validation_fraction=...), else ''."""
    few = sorted({len(r["train_subjects"]) for r in records if _trained_on_few(r)})
    note = f"; {'/'.join(str(n) for n in few)} training subjects" if few else ""
    held = sorted({len(r["validation_subjects"]) for r in records if r.get("validation_subjects")})
    if held:
        note += f"{',' if few else ';'} {'/'.join(str(n) for n in held)} of them validating"
    return note


def report(results: Path, output: Path) -> None:
    from bench.accuracy_ct import report_lines as ct_report_lines

    lines = ["# Accuracy: the CT model (BTCV, the CHAOS CT sample) and the MRI model (CHAOS T2-SPIR)", ""]
    lines += ct_report_lines()  # the CT section, from docs/accuracy_results/ct (bench/accuracy_ct.py)
    lines += ["## MRI: CHAOS T2-SPIR", "",
              "Measured by `bench/accuracy.py` (see its docstring for the commands) on "
              f"{platform.machine()} CPU, {os.cpu_count()} cores, no GPU; data: `../shared/data/chaos-mr-t2` "
              "(15 subjects, manual labels, CC BY-NC-SA 4.0).", ""]
    gen = _load(results, "generalisation_k*_fold*.json")
    plot_gen: dict[str, dict[int, tuple[float, float]]] = {}  # recipe tag -> k -> (mean, sd)
    if gen:
        lines += ["## New subjects (5-fold cross-validation by subject, all slices of held-out subjects)", "",
                  "| k (every k-th slice painted) | folds done | painted slices per fold (mean) | subjects | Dice | HD95 mm | ASSD mm | train s / fold |",
                  "|---|---|---|---|---|---|---|---|"]
        by_group: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for r in gen:
            by_group.setdefault((r["k"], r.get("tag", "")), []).append(r)
        groups = sorted(by_group)
        label = {g: f"{g[0]}" + (f" ({g[1]}{_few_subjects(by_group[g])})" if g[1] else "") for g in groups}
        for k, tag in groups:
            rs = by_group[(k, tag)]
            rows = [row for r in rs for row in r["subjects"].values()]
            d = [x["dice"] for x in rows]
            plot_gen.setdefault(tag, {})[k] = (float(np.mean(d)), float(np.std(d)))
            lines.append(f"| {label[(k, tag)]} | {len(rs)}/{FOLDS} | {np.mean([r['annotated_slices'] for r in rs]):.0f} | {len(rows)} | "
                         f"{_mean_sd(d)} | {_mean_sd([x['hd95_mm'] for x in rows])} | {_mean_sd([x['assd_mm'] for x in rows])} | "
                         f"{np.mean([r['train_seconds'] for r in rs]):.0f} |")
        lines += ["", "Per subject (Dice):", "", "| k | " + " | ".join(SUBJECTS) + " |", "|---" * (len(SUBJECTS) + 1) + "|"]
        per_group = {g: {s: row for r in by_group[g] for s, row in r["subjects"].items()} for g in groups}
        for k, tag in groups:
            per = {s: row["dice"] for s, row in per_group[(k, tag)].items()}
            lines.append(f"| {label[(k, tag)]} | " + " | ".join(f"{per[s]:.3f}" if s in per else "–" for s in SUBJECTS) + " |")
        lines.append("")
        for k, tag in groups:
            lines += _per_subject_table(f"k={label[(k, tag)]}: Dice, HD95 and ASSD per held-out subject",
                                        per_group[(k, tag)], "dice")
    dens = _load(results, "densify_k*_*.json") + product_fill_records(results)
    plot_dens: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    if dens:
        lines += ["## Densifying a painted volume (score on the unpainted slices, including beyond the first/last painted one)", "",
                  "| k | method | subjects | Dice (unpainted slices) | Dice (whole filled volume) | HD95 mm | ASSD mm | seconds / subject |",
                  "|---|---|---|---|---|---|---|---|"]
        names = {"mci": "ITK morphological contour interpolation (Fill between slices)",
                 "base": "LiverUNet, the CV model that never saw the subject, not trained on the paint",
                 "finetune": "LiverUNet, fine-tuned from the CV model that never saw the subject",
                 "finetune_mean": "LiverUNet, fine-tuned and the CV model it started from, averaged",
                 "scratch": "LiverUNet, from scratch on the painted slices only",
                 PRODUCT_MODE: "LiverUNet as Slicer's *Fill from painted slices* runs (fine-tuned; the start network kept when it scores Dice >= 0.8 on the paint; see bench/product_fills.py)"}
        by_run: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
        for r in dens:
            by_run.setdefault((r["k"], r["mode"], r.get("tag", "")), []).append(r)
        methods = sorted({(mode, tag) for _, mode, tag in by_run}, key=lambda m: (REPORTED_MODES.index(m[0]), m[1]))
        method_name = {m: names[m[0]] + (f" ({m[1]} CV model)" if m[1] else "") for m in methods}
        ks = sorted({k for k, _, _ in by_run})
        for k in ks:
            for mode, tag in methods:
                rs = by_run.get((k, mode, tag))
                if not rs:
                    continue
                d = [r["dice_scored_slices"] for r in rs]
                plot_dens.setdefault((mode, tag), {})[k] = (float(np.mean(d)), float(np.std(d)))
                lines.append(f"| {k} | {method_name[(mode, tag)]} | {len(rs)} | {_mean_sd(d)} | {_mean_sd([r['dice'] for r in rs])} | "
                             f"{_mean_sd([r['hd95_mm'] for r in rs])} | {_mean_sd([r['assd_mm'] for r in rs])} | {np.mean([r['seconds'] for r in rs]):.0f} |")
        lines.append("")
        for k in ks:
            for mode, tag in methods:
                per = {r["subject"]: r for r in by_run.get((k, mode, tag), [])}
                if per:
                    lines += _per_subject_table(f"k={k}, {method_name[(mode, tag)]}: per subject (Dice on unpainted slices; "
                                                "HD95 and ASSD of the whole filled volume)", per, "dice_scored_slices")
    notes = output.with_name(output.stem + "_notes.md")
    if notes.is_file():  # hand-written context that survives regeneration
        lines += ["", notes.read_text()]
    lines += ["", f"![Dice against k]({output.with_suffix('.png').name})"]
    output.write_text("\n".join(lines) + "\n")
    _plot(plot_gen, plot_dens, output.with_suffix(".png"))
    print(output.read_text())


def _plot(gen: dict[str, dict[int, tuple[float, float]]], dens: dict[tuple[str, str], dict[int, tuple[float, float]]],
          path: Path) -> None:
    """Dice against k: one line per recipe tag for new subjects, one per (method, tag) for densifying."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e .[bench]); no plot written")
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    tags = sorted(gen)
    for index, tag in enumerate(tags):
        values = gen[tag]
        ks = sorted(values)
        # recipes side by side within +-0.4 of their k, so many recipes stay readable
        offset = 0.8 * (index / max(len(tags) - 1, 1) - 0.5)
        axes[0].errorbar([k + offset for k in ks], [values[k][0] for k in ks], [values[k][1] for k in ks],
                         marker="os^Dv"[index % 5], markersize=4, capsize=2, color=plt.cm.tab20(index % 20),
                         label="LiverUNet" + (f" ({tag})" if tag else ""))
    axes[0].axhline(0.83, color="grey", linestyle="--", label="published Keras study (0.83)")
    axes[0].set(title="New subjects (5-fold CV)", xlabel="k (every k-th slice painted)", ylabel="Dice", ylim=(0.6, 1.0))
    axes[0].legend(loc="lower left", fontsize=6, ncol=2)  # below the curves, which all lie above 0.75
    labels = {"mci": "contour interpolation (peer)", "base": "LiverUNet CV model, untrained on the paint",
              "finetune": "LiverUNet fine-tuned", "finetune_mean": "LiverUNet fine-tuned + starting model",
              "scratch": "LiverUNet from scratch", PRODUCT_MODE: "LiverUNet as the product fills"}
    for (mode, tag), values in dens.items():
        ks = sorted(values)
        product = {"color": "black", "linewidth": 2.5} if mode == PRODUCT_MODE else {}  # the headline line
        axes[1].errorbar(ks, [values[k][0] for k in ks], [values[k][1] for k in ks], marker="o", capsize=3,
                         label=labels[mode] + (f" ({tag})" if tag else ""), **product)
    axes[1].set(title="Densifying a painted volume", xlabel="k", ylabel="Dice on unpainted slices", ylim=(0.4, 1.0))
    if dens:
        axes[1].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _command(k: int, tag: str, recipe: dict[str, Any], all_subjects: bool = False) -> str:
    """The command line that reproduces a cross-validation run and ships its fold ensemble (or, with
    ``all_subjects``, one network trained on every subject with the same recipe)."""
    defaults = asdict(Recipe())
    sets = "".join(f" --set {key}={str(value).lower() if isinstance(value, bool) else value}"
                   for key, value in recipe.items() if key in defaults and defaults[key] != value)
    tagged = f" --tag {tag}" if tag else ""
    return (f"python bench/accuracy.py --threads 1{sets} generalisation --k {k}{tagged} && "
            f"python bench/accuracy.py ship --k {k}{tagged}" + (" --all-subjects" if all_subjects else ""))


def train_on_all_subjects(k: int, recipe: Recipe, results: Path, tag: str = "") -> tuple[Path, float, str]:
    """One network trained on all subjects with the cross-validated recipe (cached); returns
    its path, the training seconds and the device. The CV scores the recipe; this network has three
    more subjects to learn from than each fold model, and costs one network's time at inference."""
    from LiverUNetLib.training import train

    path = results / "models" / f"{_tagged(f'all_subjects_k{k}', tag)}.pt"
    timing = path.with_suffix(".json")
    if not (path.exists() and timing.exists()):
        cases = []
        for s in SUBJECTS:
            image, dense, _ = load_subject(s)
            cases.append(training_case(s, image, dense if k == 1 else dense.keep_every_k(k), recipe))
        started = time.perf_counter()
        trained = train(cases, train_config(recipe, seed=100 * recipe.seed), path, resume=True,
                        progress=_every_tenth_epoch("all subjects"))
        timing.write_text(json.dumps({"train_seconds": round(time.perf_counter() - started, 1), "device": trained.device}))
    record = json.loads(timing.read_text())
    return path, record["train_seconds"], record["device"]


def _post_processing_note(recipe: dict[str, Any]) -> str:
    """How the card's scores were post-processed, against what ``segment_volume`` does by default."""
    if recipe.get("slice_smoothing", False):
        return ("Scored as `liverunet segment` and Slicer run it: probabilities averaged across neighbouring slices, "
                "threshold 0.5, largest component.")
    return ("Scored with threshold 0.5 and the largest component. `liverunet segment` and Slicer also average each "
            "slice's probability with its neighbours' before the threshold (`InferenceConfig.slice_smoothing`, on by "
            "default); `python bench/studies/slice_smoothing.py --tags <tag>` scores these same fold models with it "
            "(docs/accuracy_notes.md).")


def ship(k: int, results: Path, destination: Path, tag: str = "", all_subjects: bool = False) -> None:
    """Combine the k-fold CV models into one ensemble model file with a model card; with
    ``all_subjects``, ship one network trained on every subject with the CV's recipe instead (for
    networks whose five fold models together exceed the package's ~30 MB budget)."""
    from LiverUNetLib.model_file import LiverModel, ModelCard, load_model, save_model

    records = _load(results, f"{_experiment(k, tag)}_fold*.json")
    if len(records) != FOLDS:
        raise SystemExit(f"need all {FOLDS} folds of k={k}; have {len(records)}")
    few = [r["fold"] for r in records if _trained_on_few(r)]
    if few:
        raise SystemExit(f"folds {few} of {_experiment(k, tag)} trained on a few subjects only (--train-subjects): "
                         "ship a cross-validation that trained on all of each fold's subjects")
    rows = [row for r in records for row in r["subjects"].values()]
    dice = [x["dice"] for x in rows]
    recipe = records[0]["recipe"]
    training: dict[str, Any] = {"command": _command(k, tag, recipe, all_subjects), "recipe": recipe,
                                "painted": "every slice" if k == 1 else f"every {k}th liver slice",
                                "train_seconds_per_fold": [r["train_seconds"] for r in records], "device": records[0]["device"]}
    if all_subjects:
        path, seconds, device = train_on_all_subjects(k, Recipe.from_record(recipe), results, tag)
        single = load_model(path)
        model = LiverModel(single.networks, single.network_config, single.preprocess)
        description = (f"One network trained on all {len(SUBJECTS)} CHAOS MRI T2-SPIR subjects with the recipe that a 5-fold "
                       "cross-validation by subject scored (below). For research use; non-commercial (CC BY-NC-SA 4.0 data).")
        training.update(train_seconds_all_subjects=seconds, device=device)
        how = f"one network trained on all {len(SUBJECTS)} subjects with the recipe of the cross-validation (whose fold models score it)"
    else:
        models = [load_model(fold_model_path(results, k, tag, r["fold"])) for r in records]
        model = LiverModel([m.networks[0] for m in models], models[0].network_config, models[0].preprocess)
        description = ("Ensemble of the 5 fold models of a 5-fold cross-validation by subject on the 15 CHAOS "
                       "MRI T2-SPIR subjects; probabilities are averaged. For research use; non-commercial (CC BY-NC-SA 4.0 data).")
        how = "the 5 fold models of the cross-validation are shipped together and their probabilities averaged"
    model.card = ModelCard(
        name="LiverUNet default MRI liver model (CHAOS T2-SPIR)",
        description=description,
        training=training,
        validation={"protocol": "5-fold cross-validation by subject; each fold model scored on all slices of its 3 held-out subjects",
                    "dice_mean": round(float(np.mean(dice)), 4), "dice_sd": round(float(np.std(dice)), 4),
                    "hd95_mm_mean": round(float(np.mean([x["hd95_mm"] for x in rows])), 2),
                    "assd_mm_mean": round(float(np.mean([x["assd_mm"] for x in rows])), 2)},
        data={"name": "CHAOS challenge MR T2-SPIR training set (15 subjects)", "licence": "CC BY-NC-SA 4.0 (non-commercial)",
              "citation": "Kavur et al., Medical Image Analysis 69 (2021) 101950",
              "labels": "liver" + (" (output channel 0, the one inference reads); right kidney, left kidney and spleen "
                                   "learnt as channels 1-3 beside it" if recipe.get("neighbour_organs") else "")},
    )
    save_model(model, destination, half_precision=True)
    per_subject = {s: round(row["dice"], 4) for r in records for s, row in r["subjects"].items()}
    card = [
        "# Model card: LiverUNet default MRI liver model", "",
        f"File: `{destination.name}` ({destination.stat().st_size / 1e6:.1f} MB, float16 weights), used by "
        "`liverunet segment` and Slicer's \"Segment liver\" when no model is chosen.", "",
        "## Data", "",
        "CHAOS challenge MR T2-SPIR training set: 15 healthy-liver subjects (liver-donor candidates), one 1.5 T "
        "scanner, manual liver labels on every slice, pre-processed copy at 1.25 x 1.25 x 7.7 mm "
        "(see `../shared/data/chaos-mr-t2/README.md`).",
        "**Licence: CC BY-NC-SA 4.0 — non-commercial use only; share-alike.** Cite A. E. Kavur et al., "
        "\"CHAOS Challenge - combined (CT-MR) healthy abdominal organ segmentation\", Medical Image Analysis 69 "
        "(2021) 101950.", "",
        "## Model", "",
        model.describe().replace("\n", "  \n"), "",
        "## How it was trained", "",
        f"`{model.card.training['command']}` on {model.card.training['device']}; {how}.", "",
        "## Cross-validated accuracy (all slices of held-out subjects)", "",
        f"Dice {np.mean(dice):.4f} ± {np.std(dice):.4f}, HD95 {model.card.validation['hd95_mm_mean']} mm, "
        f"ASSD {model.card.validation['assd_mm_mean']} mm (mean over the 15 subjects, each scored by the fold "
        "model that never saw it).", "",
        f"Median {np.median(dice):.4f}. "
        + (f"Failures (Dice < 0.5): {', '.join(s for s, d in per_subject.items() if d < 0.5)}: the fold model that "
           "never saw the subject missed its liver almost entirely, so its liver appearance is not yet covered by "
           "four-fifths of this small data set. " if any(d < 0.5 for d in per_subject.values()) else ""),
        "",
        "Per subject: " + ", ".join(f"{s}: {d}" for s, d in sorted(per_subject.items(), key=lambda x: int(x[0]))), "",
        _post_processing_note(recipe), "",
        "## Limits", "",
        "Trained on T2-SPIR MRI of healthy livers from one scanner. CT, other MRI sequences and diseased livers "
        "are out of its domain: CT input is refused, and other inputs should be checked and, if needed, used to "
        "fine-tune (`liverunet train --init`, or *Train* in Slicer).",
    ]
    (destination.parent / "MODEL_CARD.md").write_text("\n".join(card) + "\n")
    print(f"wrote {destination} ({destination.stat().st_size / 1e6:.1f} MB); CV Dice {np.mean(dice):.4f} ± {np.std(dice):.4f}")


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
                tag = _tagged(tag, f"n{args.train_subjects}") if tag else f"n{args.train_subjects}"
            run_generalisation(k, recipe, args.results, args.folds, tag, args.self_train_from, args.fill_per_subject,
                               args.train_subjects, args.init_model)
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
