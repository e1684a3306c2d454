"""``densify``: one subject painted on every k-th liver slice, filled, and scored on the unpainted slices.

Each mode is one way to fill: ITK's contour interpolation (the peer Slicer ships), the CV model that never
saw the subject with the paint pasted in, that model fine-tuned on the paint (with or without the network it
started from averaged in), or a network trained from scratch on the painted slices alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from bench.accuracy_folds import fold_model_path, fold_of, load_subject, tagged
from bench.accuracy_recipe import Recipe, inference_config, train_config
from bench.accuracy_scores import metrics_row
from LiverUNetLib.inference import segment_volume
from LiverUNetLib.volume import Volume

DENSIFY_MODES = ["mci", "base", "finetune", "finetune_mean", "scratch"]


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
            out = results / f"{tagged(f'densify_k{k}_{mode}', tag)}_s{s}.json"
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
                # finetune_mean always keeps the start network; finetune does as the recipe says
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
