"""``ship``: the cross-validated MRI recipe becomes the shipped default MRI model, with its model card.

The five fold models of a cross-validation ship together (their probabilities averaged), or, with
``--all-subjects``, one network trained on every subject with the same recipe; either way the card carries the
command that reproduces it and the cross-validation's scores, which are what a user can expect on new scans.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.accuracy_folds import (FOLDS, SUBJECTS, experiment, fold_model_path, load_records, load_subject, tagged,
                                  trained_on_few, training_case)
from bench.accuracy_recipe import Recipe, every_tenth_epoch, train_config


def ship_command(k: int, tag: str, recipe: dict[str, Any], all_subjects: bool = False) -> str:
    """The command line that reproduces a cross-validation run and ships its fold ensemble (or, with
    ``all_subjects``, one network trained on every subject with the same recipe)."""
    defaults = asdict(Recipe())
    sets = "".join(f" --set {key}={str(value).lower() if isinstance(value, bool) else value}"
                   for key, value in recipe.items() if key in defaults and defaults[key] != value)
    tag_option = f" --tag {tag}" if tag else ""
    return (f"python bench/accuracy.py --threads 1{sets} generalisation --k {k}{tag_option} && "
            f"python bench/accuracy.py ship --k {k}{tag_option}" + (" --all-subjects" if all_subjects else ""))


def train_on_all_subjects(k: int, recipe: Recipe, results: Path, tag: str = "") -> tuple[Path, float, str]:
    """One network trained on all subjects with the cross-validated recipe (cached); returns
    its path, the training seconds and the device. The CV scores the recipe; this network has three
    more subjects to learn from than each fold model, and costs one network's time at inference."""
    from LiverUNetLib.training import train

    path = results / "models" / f"{tagged(f'all_subjects_k{k}', tag)}.pt"
    timing = path.with_suffix(".json")
    if not (path.exists() and timing.exists()):
        cases = []
        for s in SUBJECTS:
            image, dense, _ = load_subject(s)
            cases.append(training_case(s, image, dense if k == 1 else dense.keep_every_k(k), recipe))
        started = time.perf_counter()
        trained = train(cases, train_config(recipe, seed=100 * recipe.seed), path, resume=True,
                        progress=every_tenth_epoch("all subjects"))
        timing.write_text(json.dumps({"train_seconds": round(time.perf_counter() - started, 1), "device": trained.device}))
    record = json.loads(timing.read_text())
    return path, record["train_seconds"], record["device"]


def post_processing_note(recipe: dict[str, Any]) -> str:
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

    records = load_records(results, f"{experiment(k, tag)}_fold*.json")
    if len(records) != FOLDS:
        raise SystemExit(f"need all {FOLDS} folds of k={k}; have {len(records)}")
    few = [r["fold"] for r in records if trained_on_few(r)]
    if few:
        raise SystemExit(f"folds {few} of {experiment(k, tag)} trained on a few subjects only (--train-subjects): "
                         "ship a cross-validation that trained on all of each fold's subjects")
    rows = [row for r in records for row in r["subjects"].values()]
    dice = [x["dice"] for x in rows]
    recipe = records[0]["recipe"]
    training: dict[str, Any] = {"command": ship_command(k, tag, recipe, all_subjects), "recipe": recipe,
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
        post_processing_note(recipe), "",
        "## Limits", "",
        "Trained on T2-SPIR MRI of healthy livers from one scanner. CT, other MRI sequences and diseased livers "
        "are out of its domain: CT input is refused, and other inputs should be checked and, if needed, used to "
        "fine-tune (`liverunet train --init`, or *Train* in Slicer).",
    ]
    (destination.parent / "MODEL_CARD.md").write_text("\n".join(card) + "\n")
    print(f"wrote {destination} ({destination.stat().st_size / 1e6:.1f} MB); CV Dice {np.mean(dice):.4f} ± {np.std(dice):.4f}")
