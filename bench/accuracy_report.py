"""``report``: docs/accuracy.md and its figure, rebuilt from the result files alone.

The page reads top down: what the shipped models score (``accuracy_summary``), the hand-written notes
(``docs/accuracy_notes.md``: the experiments that did not help as one table, then the detail by topic),
then every measured run as tables regenerated from the JSON records under ``--results`` (and the CT records
of ``bench/accuracy_ct.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.accuracy_densify import DENSIFY_MODES
from bench.accuracy_folds import FOLDS, SUBJECTS, load_records, trained_on_few
from bench.accuracy_plot import plot_dice_against_k
from bench.accuracy_scores import mean_sd
from bench.accuracy_summary import summary_lines
from bench.product_fills import PRODUCT_MODE, product_fill_records

REPORTED_MODES = DENSIFY_MODES + [PRODUCT_MODE]  # the product's fills are assembled, never run by mode


def per_subject_table(title: str, per: dict[str, dict[str, Any]], dice_key: str) -> list[str]:
    """A collapsed per-subject table (Dice, HD95, ASSD) with the mean ± sd row."""
    order = [s for s in SUBJECTS if s in per]
    lines = ["<details><summary>" + title + "</summary>", "", "| subject | Dice | HD95 mm | ASSD mm |", "|---|---|---|---|"]
    for s in order:
        row = per[s]
        lines.append(f"| {s} | {row[dice_key]:.3f} | {row['hd95_mm']:.1f} | {row['assd_mm']:.2f} |")
    lines.append(f"| mean ± sd | {mean_sd([per[s][dice_key] for s in order])} | "
                 f"{mean_sd([per[s]['hd95_mm'] for s in order])} | {mean_sd([per[s]['assd_mm'] for s in order])} |")
    return lines + ["", "</details>", ""]


def few_subjects(records: list[dict[str, Any]]) -> str:
    """'; 3 training subjects' for a few-scans run (--train-subjects), '; 1 of them validating' for a run
    with the product's validation hold-out (--set validation_fraction=...), else ''."""
    few = sorted({len(r["train_subjects"]) for r in records if trained_on_few(r)})
    note = f"; {'/'.join(str(n) for n in few)} training subjects" if few else ""
    held = sorted({len(r["validation_subjects"]) for r in records if r.get("validation_subjects")})
    if held:
        note += f"{',' if few else ';'} {'/'.join(str(n) for n in held)} of them validating"
    return note


def generalisation_lines(results: Path) -> tuple[list[str], dict[str, dict[int, tuple[float, float]]]]:
    """The cross-validation tables (one row per k and recipe tag, then per subject), and the plot's points
    (recipe tag -> k -> (mean, sd))."""
    gen = load_records(results, "generalisation_k*_fold*.json")
    plot_gen: dict[str, dict[int, tuple[float, float]]] = {}
    if not gen:
        return [], plot_gen
    lines = ["#### New subjects (5-fold cross-validation by subject, all slices of held-out subjects)", "",
             "| k (every k-th slice painted) | folds done | painted slices per fold (mean) | subjects | Dice | HD95 mm | ASSD mm | train s / fold |",
             "|---|---|---|---|---|---|---|---|"]
    by_group: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in gen:
        by_group.setdefault((r["k"], r.get("tag", "")), []).append(r)
    groups = sorted(by_group)
    label = {g: f"{g[0]}" + (f" ({g[1]}{few_subjects(by_group[g])})" if g[1] else "") for g in groups}
    for k, tag in groups:
        rs = by_group[(k, tag)]
        rows = [row for r in rs for row in r["subjects"].values()]
        d = [x["dice"] for x in rows]
        plot_gen.setdefault(tag, {})[k] = (float(np.mean(d)), float(np.std(d)))
        lines.append(f"| {label[(k, tag)]} | {len(rs)}/{FOLDS} | {np.mean([r['annotated_slices'] for r in rs]):.0f} | {len(rows)} | "
                     f"{mean_sd(d)} | {mean_sd([x['hd95_mm'] for x in rows])} | {mean_sd([x['assd_mm'] for x in rows])} | "
                     f"{np.mean([r['train_seconds'] for r in rs]):.0f} |")
    lines += ["", "Per subject (Dice):", "", "| k | " + " | ".join(SUBJECTS) + " |", "|---" * (len(SUBJECTS) + 1) + "|"]
    per_group = {g: {s: row for r in by_group[g] for s, row in r["subjects"].items()} for g in groups}
    for k, tag in groups:
        per = {s: row["dice"] for s, row in per_group[(k, tag)].items()}
        lines.append(f"| {label[(k, tag)]} | " + " | ".join(f"{per[s]:.3f}" if s in per else "–" for s in SUBJECTS) + " |")
    lines.append("")
    for k, tag in groups:
        lines += per_subject_table(f"k={label[(k, tag)]}: Dice, HD95 and ASSD per held-out subject", per_group[(k, tag)], "dice")
    return lines, plot_gen


DENSIFY_NAMES = {
    "mci": "ITK morphological contour interpolation (Fill between slices)",
    "base": "LiverUNet, the CV model that never saw the subject, not trained on the paint",
    "finetune": "LiverUNet, fine-tuned from the CV model that never saw the subject",
    "finetune_mean": "LiverUNet, fine-tuned and the CV model it started from, averaged",
    "scratch": "LiverUNet, from scratch on the painted slices only",
    PRODUCT_MODE: "LiverUNet as Slicer's *Fill from painted slices* runs (fine-tuned; the start network kept when it "
                  "scores Dice >= 0.8 on the paint; see bench/product_fills.py)",
}


def densify_lines(results: Path) -> tuple[list[str], dict[tuple[str, str], dict[int, tuple[float, float]]]]:
    """The fill tables (one row per k and method, then per subject), and the plot's points
    ((mode, tag) -> k -> (mean, sd))."""
    dens = load_records(results, "densify_k*_*.json") + product_fill_records(results)
    plot_dens: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    if not dens:
        return [], plot_dens
    lines = ["#### Densifying a painted volume (score on the unpainted slices, including beyond the first/last painted one)", "",
             "| k | method | subjects | Dice (unpainted slices) | Dice (whole filled volume) | HD95 mm | ASSD mm | seconds / subject |",
             "|---|---|---|---|---|---|---|---|"]
    by_run: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    for r in dens:
        by_run.setdefault((r["k"], r["mode"], r.get("tag", "")), []).append(r)
    methods = sorted({(mode, tag) for _, mode, tag in by_run}, key=lambda m: (REPORTED_MODES.index(m[0]), m[1]))
    method_name = {m: DENSIFY_NAMES[m[0]] + (f" ({m[1]} CV model)" if m[1] else "") for m in methods}
    ks = sorted({k for k, _, _ in by_run})
    for k in ks:
        for mode, tag in methods:
            rs = by_run.get((k, mode, tag))
            if not rs:
                continue
            d = [r["dice_scored_slices"] for r in rs]
            plot_dens.setdefault((mode, tag), {})[k] = (float(np.mean(d)), float(np.std(d)))
            lines.append(f"| {k} | {method_name[(mode, tag)]} | {len(rs)} | {mean_sd(d)} | {mean_sd([r['dice'] for r in rs])} | "
                         f"{mean_sd([r['hd95_mm'] for r in rs])} | {mean_sd([r['assd_mm'] for r in rs])} | {np.mean([r['seconds'] for r in rs]):.0f} |")
    lines.append("")
    for k in ks:
        for mode, tag in methods:
            per = {r["subject"]: r for r in by_run.get((k, mode, tag), [])}
            if per:
                lines += per_subject_table(f"k={k}, {method_name[(mode, tag)]}: per subject (Dice on unpainted slices; "
                                           "HD95 and ASSD of the whole filled volume)", per, "dice_scored_slices")
    return lines, plot_dens


def report(results: Path, output: Path) -> None:
    """Write ``output`` (docs/accuracy.md) and its figure: the shipped models first, then the hand-written
    notes (``<output>_notes.md``: the experiments that did not help, the detail by topic), then every run."""
    from bench.accuracy_ct import report_lines as ct_report_lines

    lines = ["# Accuracy: the shipped CT model (BTCV, the CHAOS CT sample) and MRI model (CHAOS T2-SPIR)", ""]
    lines += summary_lines(results)
    notes = output.with_name(output.stem + "_notes.md")
    if notes.is_file():  # hand-written context that survives regeneration
        lines += [notes.read_text().rstrip("\n"), ""]
    lines += ["## All measured runs", "",
              "Every run, one row per recipe: the shipped models' rows and the variants measured against them "
              "(*Experiments that did not help* says what each variant changed). Regenerated from the JSON "
              "records in `docs/accuracy_results` by `python bench/accuracy.py --threads 1 --results "
              "docs/accuracy_results report`.", ""]
    # the CT section (bench/accuracy_ct.py, from docs/accuracy_results/ct), one heading level down
    lines += ["#" + line if line.startswith("## ") else line for line in ct_report_lines()]
    lines += ["### MRI: CHAOS T2-SPIR", "",
              "Measured by `bench/accuracy.py` (commands in its docstring) on CPUs without a GPU (which ones: "
              "*Commands to reproduce*); data: `../shared/data/chaos-mr-t2` (15 subjects, manual labels, "
              "CC BY-NC-SA 4.0).", ""]
    generalisation, plot_gen = generalisation_lines(results)
    densify, plot_dens = densify_lines(results)
    lines += generalisation + densify
    lines += ["", f"![Dice against k]({output.with_suffix('.png').name})"]
    output.write_text("\n".join(lines) + "\n")
    plot_dice_against_k(plot_gen, plot_dens, output.with_suffix(".png"))
    print(output.read_text())
