"""Ship the CT cross-validation's fold ensemble as the default CT model, with its model card.

Called by ``python bench/accuracy_ct.py ship``: the five fold models of ``bench/accuracy_ct.py cv`` become one
model file whose probabilities are averaged, and ``LiverUNetLib/models/MODEL_CARD_CT.md`` is written from the
measured records (cross-validated and external scores, the exact commands, the data and its licence).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.accuracy_ct import FOLDS, CT_RECIPE, ensemble_record, fold_ensemble, load_records, score_ensemble, summary
from bench.accuracy import Recipe

DATA = {"name": "BTCV (MICCAI 2015 Multi-Atlas Labeling Beyond the Cranial Vault), 30 training CTs, portal venous phase",
        "licence": "CC BY 4.0 as listed by public dataset compilations; Synapse syn3193805 data-use terms",
        "citation": "B. Landman et al., MICCAI Multi-Atlas Labeling Beyond the Cranial Vault - Workshop and Challenge, 2015",
        "external_test": "CHAOS CT sample (one CT, CC BY-NC-SA 4.0; Kavur et al., Medical Image Analysis 69 (2021) 101950)"}


def command(tag: str, recipe: dict[str, Any]) -> str:
    """The command line that reproduces the cross-validation and ships it."""
    defaults = {k: v for k, v in CT_RECIPE.__dict__.items()}
    sets = "".join(f" --set {k}={str(v).lower() if isinstance(v, bool) else v}"
                   for k, v in recipe.items() if k in defaults and defaults[k] != v)
    tagged = f" --tag {tag}" if tag else ""
    return (f"python bench/accuracy_ct.py --threads 1{sets}{tagged} cv --folds 0 2 4 & "
            f"python bench/accuracy_ct.py --threads 1{sets}{tagged} cv --folds 1 3; wait; "
            f"python bench/accuracy_ct.py{tagged} ship")


def ship_ct(results: Path, tag: str, destination: Path) -> None:
    from LiverUNetLib.model_file import ModelCard, save_model

    records = load_records(results, tag)
    if len(records) != FOLDS:
        raise SystemExit(f"need all {FOLDS} folds of the CT cross-validation{' ' + tag if tag else ''}; have {len(records)}")
    recipe = records[0]["recipe"]
    external = ensemble_record(results, tag) or score_ensemble(Recipe.from_record(recipe), results, tag)
    s = summary(records)
    model = fold_ensemble(tag)
    validation = {
        "protocol": "5-fold cross-validation by subject on the 30 BTCV CTs; each fold model scored on all slices of its "
                    "6 held-out subjects, with the product's smoothing across slices",
        "dice_mean": round(float(np.mean(s["dice"])), 4), "dice_sd": round(float(np.std(s["dice"])), 4),
        "hd95_mm_mean": round(float(np.mean(s["hd95"])), 2), "assd_mm_mean": round(float(np.mean(s["assd"])), 2),
        "chaos_ct_dice_fold_models": [round(d, 4) for d in s["chaos_fold_dice"]],
        "chaos_ct_dice_ensemble": round(external["chaos_ct"]["dice"], 4),
        "chaos_ct_hd95_mm_ensemble": round(external["chaos_ct"]["hd95_mm"], 2),
    }
    model.card = ModelCard(
        name="LiverUNet default CT liver model (BTCV)",
        description="Ensemble of the 5 fold models of a 5-fold cross-validation by subject on the 30 BTCV abdominal CTs; "
                    "probabilities are averaged. Research use; see the model card for the data's terms.",
        training={"command": command(tag, recipe), "recipe": recipe, "painted": "every slice (manual labels)",
                  "train_seconds_per_fold": [r["train_seconds"] for r in records], "device": records[0]["device"],
                  "machine": records[0].get("machine", "")},
        validation=validation,
        data=DATA,
    )
    save_model(model, destination, half_precision=True)
    per_subject = {k: round(v["dice"], 4) for r in records for k, v in r["subjects"].items()}
    worst = sorted(per_subject.items(), key=lambda kv: kv[1])[:3]
    card = [
        "# Model card: LiverUNet default CT liver model", "",
        f"File: `{destination.name}` ({destination.stat().st_size / 1e6:.1f} MB, float16 weights), used by "
        "`liverunet segment` and Slicer's \"Segment liver\" for CT images when no model is chosen (the image's DICOM "
        "Modality, else its Hounsfield intensities, picks it), and the start of *Fill from painted slices* and *Train* "
        "on CT.", "",
        "## Data", "",
        "BTCV (MICCAI 2015 \"Multi-Atlas Labeling Beyond the Cranial Vault\"): the 30 training CTs, portal venous "
        "phase, manual labels of 13 organs (the liver is learnt; every slice labelled), in the pre-processed form of "
        "`../shared/data/btcv-ct/README.md` (HU clipped to [-125, 275], in-plane spacing 1.04-1.71 mm, slices "
        "2.5-5 mm). **Licence: CC BY 4.0 as listed by public dataset compilations, under the Synapse (syn3193805) "
        "data-use terms.** Cite B. Landman et al., \"MICCAI multi-atlas labeling beyond the cranial vault - workshop "
        "and challenge\", Proc. MICCAI Multi-Atlas Labeling Beyond Cranial Vault Workshop Challenge, 2015.", "",
        "## Model", "",
        model.describe().replace("\n", "  \n"), "",
        "## How it was trained", "",
        f"`{model.card.training['command']}` on {model.card.training['device']} ({records[0].get('machine', '')}); "
        f"{np.mean([r['train_seconds'] for r in records]) / 60:.0f} min per fold network. The window [-125, 275] HU "
        "is all this copy of BTCV holds, so images are clipped to it at inference too. Each epoch is exactly 256 "
        "slices (`every_slice_each_epoch` off), drawn from all slices of the 24 training subjects.", "",
        "## Accuracy", "",
        f"- 5-fold cross-validation, all slices of held-out subjects (30): Dice {np.mean(s['dice']):.4f} ± "
        f"{np.std(s['dice']):.4f} (median {np.median(s['dice']):.4f}), HD95 {validation['hd95_mm_mean']} mm, ASSD "
        f"{validation['assd_mm_mean']} mm. Lowest: " + ", ".join(f"{k}: {v}" for k, v in worst) + ".",
        f"- CHAOS CT sample (another hospital and scanner, never trained on), this ensemble: Dice "
        f"{external['chaos_ct']['dice']:.4f}, HD95 {external['chaos_ct']['hd95_mm']:.1f} mm; each fold model alone "
        f"{_mean_sd(s['chaos_fold_dice'])}.",
        f"- A 30 mm ball of liver intensity pasted on the right kidney of each held-out subject: "
        f"{np.mean(s['mass_as_liver']):.1%} of it taken for liver on average, Dice {np.mean(s['mass_dice']):.4f}.", "",
        "Per subject: " + ", ".join(f"{k}: {v}" for k, v in sorted(per_subject.items())), "",
        "Details and the recipes that were compared: docs/accuracy.md (CT section).", "",
        "## Limits", "",
        "Trained on 30 contrast CTs of adults in the portal venous phase from one challenge, and tested on one CT "
        "from another hospital. Non-contrast or arterial-phase CT, livers with large tumours or cysts (a liver-like "
        "mass beside the liver was taken for liver in part, above), and children are outside what was measured: check the result, "
        "and fine-tune on a few painted scans (*Fill from painted slices*, *Train*) where it fails. MRI is refused "
        "(the MRI model is chosen for it).",
    ]
    (destination.parent / "MODEL_CARD_CT.md").write_text("\n".join(card) + "\n")
    print(f"wrote {destination} ({destination.stat().st_size / 1e6:.1f} MB); CV Dice {np.mean(s['dice']):.4f}; "
          f"CHAOS CT {external['chaos_ct']['dice']:.4f}")


def _mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"
