"""``generalisation``: 5-fold cross-validation by subject, every held-out subject scored on all its slices.

Training subjects keep their label on every k-th liver slice only, so one table says what a model painted
that sparsely does on a scan it never saw. Each fold is one JSON file, so a stopped run continues.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np

from bench.accuracy_densify import densify_config
from bench.accuracy_folds import (SUBJECTS, experiment, fold_model_path, fold_of, load_subject, training_case,
                                  training_subjects)
from bench.accuracy_recipe import Recipe, every_tenth_epoch, inference_config, train_config
from bench.accuracy_scores import mask_dice, metrics_row
from LiverUNetLib.inference import segment_volume
from LiverUNetLib.labels import SparseLabel, sparse_label_from_mask
from LiverUNetLib.model_file import LiverModel, load_model
from LiverUNetLib.volume import Volume


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


def fill_model_for(image: Volume, painted: SparseLabel, subject: str, base: Path, recipe: Recipe, results: Path) -> Path:
    """``base`` fine-tuned on one subject's painted slices, as Slicer's "Fill from painted slices" does."""
    from LiverUNetLib.training import TrainingCase, train

    path = results / "models" / f"fill_{subject}_{base.stem}.pt"
    train([TrainingCase(subject, image, painted)], densify_config(recipe, fine_tune=True), path, init_model=base, resume=False)
    return path


def fold_network(ensemble: Path, fold: int) -> LiverModel:
    """Network ``fold`` of a fold ensemble as a one-network model (the start of that fold's training)."""
    model = load_model(ensemble)
    if len(model.networks) <= fold:
        raise SystemExit(f"{ensemble} holds {len(model.networks)} networks, not one per fold")
    return LiverModel([model.networks[fold]], model.network_config, model.preprocess, model.card, model.threshold)


def run_generalisation(k: int, recipe: Recipe, results: Path, folds: list[int], tag: str = "",
                       self_train_from: str = "", fill_per_subject: bool = False,
                       train_subjects: Optional[int] = None, init_model: Optional[Path] = None,
                       init_fold_networks: Optional[Path] = None) -> None:
    """``train_subjects``: train on that many of the fold's subjects only (how a model from a few painted
    scans does on new ones); the held-out subjects and their scoring are unchanged.
    ``self_train_from``: a tag of a finished k-sparse run. Its fold model fills the unpainted slices of the
    fold's training subjects and is fine-tuned (``recipe.epochs``) on painted plus filled slices.
    ``fill_per_subject``: each subject is filled by that model fine-tuned on the subject's own painted
    slices first (densify, then train: what a user can do in Slicer with "Fill from painted slices").
    ``init_model``: every fold starts from this model's networks instead of random weights (for example the
    shipped CT model: does MRI training gain from what it learnt on CT?).
    ``init_fold_networks``: fold f starts from network f of this fold ensemble (the shipped MRI model holds the
    five fold networks of this same split, in fold order), so the start never saw the subjects scored: what
    *Train* started from the shipped model gives on new subjects."""
    from LiverUNetLib.training import split_cases, train

    for fold in folds:
        out = results / f"{experiment(k, tag)}_fold{fold}.json"
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
        start = init if init is not None else fold_network(init_fold_networks, fold) if init_fold_networks else init_model
        trained = train(cases, config, model_path, init_model=start, resume=True,
                        progress=every_tenth_epoch(f"k={k} fold={fold}"))
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
            **({"initialised_from": f"{init_fold_networks} network {fold}"} if init_fold_networks else {}),
            "train_seconds": round(seconds, 1), "device": trained.device, "recipe": asdict(recipe),
            **({"validation_subjects": [cases[i].name for i in split_cases(len(cases), config)[0][1]],
                "validation_dice": trained.validation_dice, "epochs_run": trained.epochs_run}
               if recipe.validation_fraction > 0 else {}),
            "subjects": rows,
        }
        out.write_text(json.dumps(record, indent=1))
