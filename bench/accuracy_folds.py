"""The CHAOS MRI subjects, their split into cross-validation folds, and where each run's files are kept.

Every MRI accuracy figure (``bench/accuracy.py``) is scored on subjects that the model that scored them never
saw: a fixed permutation (seed 2019) deals the 15 subjects into 5 folds of 3, so every run and every study
compares the same held-out subjects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench.accuracy_recipe import Recipe
from LiverUNetLib.image_io import read_image
from LiverUNetLib.labels import SparseLabel, sparse_label_from_mask
from LiverUNetLib.volume import Volume

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LIVERUNET_DATA", ROOT.parent / "shared" / "data")) / "chaos-mr-t2"
SUBJECTS = ["3", "5", "13", "15", "19", "20", "21", "22", "31", "32", "34", "36", "37", "38", "39"]
FOLDS = 5


def load_subject(subject: str) -> tuple[Volume, SparseLabel, Volume]:
    """The T2-SPIR image, its liver as a label painted on every slice, and the liver mask."""
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
    """The fold whose model never sees ``subject`` (the same split for every run)."""
    order = np.random.default_rng(2019).permutation(len(SUBJECTS))
    return int(np.flatnonzero(order == SUBJECTS.index(subject))[0] % FOLDS)


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


def trained_on_few(record: dict[str, Any]) -> bool:
    """True for a fold that trained on only some of its subjects (--train-subjects)."""
    return "train_subjects" in record and len(record["train_subjects"]) < len(SUBJECTS) - len(record["test_subjects"])


def tagged(stem: str, tag: str) -> str:
    """A tag keeps a recipe variant's files beside the default run's."""
    return stem + (f"_{tag}" if tag else "")


def experiment(k: int, tag: str) -> str:
    """File stem of a cross-validation experiment."""
    return tagged(f"generalisation_k{k}", tag)


def fold_model_path(results: Path, k: int, tag: str, fold: int) -> Path:
    """Where a cross-validation fold model is kept."""
    return results / "models" / f"{experiment(k, tag)}_fold{fold}.pt"


def load_records(results: Path, pattern: str) -> list[dict[str, Any]]:
    """The result files under ``results`` matching ``pattern``, in name order."""
    return [json.loads(p.read_text()) for p in sorted(results.glob(pattern))]
