"""The first section of docs/accuracy.md: what the two shipped models score, and their fills against the peer.

A reader looks for the figures of the models that ship before the experiments that led to them, so this
section comes first; it is built from the same result files as the full tables further down (no figure is
typed in). Which cross-validation run a shipped model comes from is read from the command on its model
card (``--tag``), so shipping another run moves this section with it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench.accuracy_folds import FOLDS, load_records
from bench.accuracy_scores import mean_sd
from bench.product_fills import product_fill_records

# bench/ct_fill.py's mode for what *Fill from painted slices* runs on a CT, and ITK's contour interpolation
CT_PRODUCT_FILL = "ct_model"
PEER_FILL = "mci"


def shipped_run(modality: str) -> Optional[tuple[str, int]]:
    """(recipe tag, k) of the cross-validation the shipped ``modality`` model came from (tag "" for the untagged
    run, k 1 unless its ship command says ``--k``), read from its card's command; None when this build ships
    no such model."""
    from LiverUNetLib.model_file import load_model
    from LiverUNetLib.shipped_models import shipped_model_path

    path = shipped_model_path(modality)
    if path is None:
        return None
    command = str(load_model(path).card.training.get("command", ""))
    tag, k = re.search(r"--tag (\S+)", command), re.search(r"ship --k (\d+)", command)
    return (tag.group(1) if tag else "", int(k.group(1)) if k else 1)


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _ct_rows(tag: str) -> list[str]:
    from bench.accuracy_ct import RESULTS, ensemble_record, load_records as load_ct_records, summary
    from LiverUNetLib.shipped_models import SHIPPED_MODEL_FILES

    records = load_ct_records(RESULTS, tag)
    if not records:
        return []
    s = summary(records)
    rows = [_row(f"CT, `{SHIPPED_MODEL_FILES['ct']}`",
                 f"{s['subjects']} BTCV CTs, 5-fold cross-validation by subject ({len(records)}/{FOLDS} folds): each "
                 "fold model on all slices of its held-out subjects",
                 mean_sd(s["dice"]), mean_sd(s["hd95"], 1), mean_sd(s["assd"], 2)),
            _row("", "the same subjects with a 30 mm ball of their own liver's intensity pasted on the right kidney "
                     f"({100 * float(np.mean(s['mass_as_liver'])):.1f} % of it taken for liver on average)",
                 mean_sd(s["mass_dice"]), "–", "–")]
    ensemble = ensemble_record(RESULTS, tag)
    if ensemble:
        chaos = ensemble["chaos_ct"]
        rows.append(_row("", "the CHAOS CT sample (another hospital and scanner), the shipped fold ensemble",
                         f"{chaos['dice']:.3f}", f"{chaos['hd95_mm']:.1f}", f"{chaos['assd_mm']:.2f}"))
    return rows


def _mri_rows(results: Path, tag: str, k: int) -> list[str]:
    from LiverUNetLib.shipped_models import SHIPPED_MODEL_FILES

    stem = f"generalisation_k{k}" + (f"_{tag}" if tag else "")
    records = [r for r in load_records(results, f"{stem}_fold*.json") if r.get("tag", "") == tag]
    if not records:
        return []
    rows = [row for r in records for row in r["subjects"].values()]
    name = f"MRI, `{SHIPPED_MODEL_FILES['mri']}`"
    cv = (f"{len(rows)} CHAOS T2-SPIR subjects, 5-fold cross-validation by subject ({len(records)}/{FOLDS} folds): "
          "each fold model on all slices of its held-out subjects")
    lines = []
    smoothing = results / "slice_smoothing.json"  # bench/studies/slice_smoothing.py: the same models, smoothed
    smoothed = json.loads(smoothing.read_text()) if smoothing.is_file() else {}
    if smoothed.get("k") == k and tag in smoothed:
        product = smoothed[tag]["summary"]["smoothed"]
        lines.append(_row(name, f"{cv}, as the product segments (smoothing across slices)",
                          f"{product['dice']:.4f} ± {product['dice_sd']:.3f}", f"{product['hd95_mm']:.1f}",
                          f"{product['assd_mm']:.2f}"))
        name, cv = "", "the same, scored without the smoothing, as every MRI row further down"
    lines.append(_row(name, cv, mean_sd([x["dice"] for x in rows]), mean_sd([x["hd95_mm"] for x in rows], 1),
                      mean_sd([x["assd_mm"] for x in rows], 2)))
    return lines


def _fill_rows(results: Path) -> list[str]:
    """One row per (scan, k): the product's fill against contour interpolation, Dice on the unpainted slices."""
    rows: list[tuple[str, str]] = []
    ct_fills = results / "ct_fill"
    for pattern in ("ct_fill_k*_*.json", "ct_fill_btcv*_k*_*.json"):
        records = load_records(ct_fills, pattern) if ct_fills.is_dir() else []
        btcv = sorted({r["data"].rsplit(" ", 1)[-1] for r in records if r.get("data", "").startswith("BTCV")})
        scan = (f"CT: BTCV subjects {', '.join(btcv)}, each filled from the CT fold model that never saw it" if btcv
                else "CT: the CHAOS CT sample, filled from the shipped CT model")
        for k in sorted({r["k"] for r in records}):
            fills = {mode: [r for r in records if r["k"] == k and r["mode"] == mode] for mode in (CT_PRODUCT_FILL, PEER_FILL)}
            if not fills[CT_PRODUCT_FILL]:
                continue
            painted = sorted({len(r["painted"]) for r in fills[CT_PRODUCT_FILL]})
            count = f"{painted[0]}" if len(painted) == 1 else f"{painted[0]}-{painted[-1]}"
            rows.append((scan, f"{len(fills[CT_PRODUCT_FILL])} | {_every(k)} liver slice ({count} slices) | "
                               f"{_mean(fills[CT_PRODUCT_FILL])} | {_mean(fills[PEER_FILL])}"))
    product = product_fill_records(results)
    for k in sorted({r["k"] for r in product}):
        fills = [r for r in product if r["k"] == k]
        peer = load_records(results, f"densify_k{k}_{PEER_FILL}_s*.json")
        rows.append(("MRI: CHAOS T2-SPIR subjects, each filled from the cross-validation model that never saw it",
                     f"{len(fills)} | {_every(k)} liver slice | {_mean(fills)} | {_mean(peer)}"))
    # a scan is named on its first row only
    return [_row(scan if i == 0 or rows[i - 1][0] != scan else "", cells) for i, (scan, cells) in enumerate(rows)]


def _every(k: int) -> str:
    """'every 3rd', 'every 5th', 'every 22nd' (k = 1: 'every')."""
    if k == 1:
        return "every"
    suffix = "th" if k % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"every {k}{suffix}"


def _mean(records: list[dict[str, Any]]) -> str:
    """Dice on the unpainted slices: one value, or mean ± sd over several subjects."""
    values = [r["dice_scored_slices"] for r in records]
    if not values:
        return "–"
    return f"{values[0]:.3f}" if len(values) == 1 else mean_sd(values)


def summary_lines(results: Path) -> list[str]:
    """The shipped models' section (empty when no shipped model has records under ``results``)."""
    ct, mri = shipped_run("ct"), shipped_run("mri")
    models = (_ct_rows(ct[0]) if ct is not None else []) + (_mri_rows(results, *mri) if mri is not None else [])
    fills = _fill_rows(results)
    if not (models or fills):
        return []
    lines = ["## The shipped models", ""]
    if models:
        lines += ["Scored on scans the scoring model never saw; HD95 and ASSD in mm. The CT rows are scored as the "
                  "product segments; the tables under *All measured runs* hold every run and subject.", "",
                  "| model | measured on | Dice | HD95 mm | ASSD mm |", "|---|---|---|---|---|", *models, ""]
    if fills:
        lines += ["*Fill from painted slices* (the model fine-tuned on the painted slices) against contour "
                  "interpolation (ITK's morphological contour interpolation, what Slicer's *Fill between slices* "
                  "uses): Dice on the unpainted slices.", "",
                  "| scan | subjects | painted | LiverUNet's fill | contour interpolation |", "|---|---|---|---|---|",
                  *fills, ""]
    return lines
