"""docs/quality.md from the measured results of ``bench/quality.py`` (summary.json, speed.json, fill/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality_fill import FOLDERS, fill_table_rows
from bench.quality_scores import BAD_DICE, FALSE_ALARM_CAP, TOP

SETS = (("mri_clean", "MRI, held-out subjects"), ("mri_all", "MRI, held-out + hard inputs"),
        ("ct_clean", "CT, held-out subjects"), ("ct_all", "CT, held-out + hard inputs"),
        ("clean", "both, held-out subjects"), ("all", "both, held-out + hard inputs"))


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _agreement_table(held_out: dict[str, Any]) -> list[str]:
    lines = ["| results | n | Spearman | mean abs. error | real Dice in the range | flagged: Dice < 0.90 | "
             "flagged: Dice >= 0.90 |", "|---|---|---|---|---|---|---|"]
    for key, title in SETS:
        a = held_out[key]
        lines.append(f"| {title} | {a['results']} | {a['spearman']:.2f} | {a['mean_abs_error']:.3f} | "
                     f"{100 * a['in_range']:.0f} % | {a['bad_flagged']} of {a['bad']} | "
                     f"{a['good_flagged']} of {a['good']} ({100 * a['good_flagged'] / max(a['good'], 1):.0f} %) |")
    return lines


def _held_out_section(summary: dict[str, Any]) -> list[str]:
    signals = summary["signals"]
    chosen = signals["expected_error"]["held_out"]
    missed = chosen["all"]["missed"]
    lines = [
        "## The estimated Dice, held out", "",
        "Each result is estimated by a calibration fitted without its subject (leave one subject out, on the other "
        "subjects of the same cross-validation, all their inputs); the review line of that calibration flags it or "
        "not. Signal: the expected Dice loss (shipped).", "",
        *_agreement_table(chosen), "",
        f"Missed by the flag (Dice < {BAD_DICE}): " + ("; ".join(missed) if missed else "none") + ".", "",
        "The other signal, the share of voxels near the threshold, held out:", "",
        "| signal | Spearman, held-out subjects | Spearman, with hard inputs | flagged: Dice < 0.90 | flagged: Dice >= 0.90 |",
        "|---|---|---|---|---|",
    ]
    for name, data in signals.items():
        clean, every = data["held_out"]["clean"], data["held_out"]["all"]
        lines.append(f"| {name} | {clean['spearman']:.2f} | {every['spearman']:.2f} | {every['bad_flagged']} of "
                     f"{every['bad']} | {every['good_flagged']} of {every['good']} |")
    pooled = chosen["all_pooled_calibration"]
    lines += ["", f"One calibration pooled over both models instead of one per model: Spearman {pooled['spearman']:.2f}, "
              f"flagged {pooled['bad_flagged']} of {pooled['bad']} bad and {pooled['good_flagged']} of {pooled['good']} "
              "good results (all inputs).", "",
              "### What catching every bad result would cost", "",
              "The shipped review line is fitted to flag at most a quarter of the good calibration results "
              f"(FALSE_ALARM_CAP = {FALSE_ALARM_CAP}). Fixed lines on the same held-out estimates:", "",
              "| flag when estimated Dice below | held-out subjects: bad flagged | good flagged | with hard inputs: bad flagged | good flagged |",
              "|---|---|---|---|---|"]
    for line, data in chosen["fixed_lines"].items():
        c, a = data["clean"], data["all"]
        lines.append(f"| {line} | {c[0]} of {c[1]} | {c[2]} of {c[3]} | {a[0]} of {a[1]} | {a[2]} of {a[3]} "
                     f"({100 * a[2] / max(a[3], 1):.0f} %) |")
    return lines + [""]


def _slices_section(summary: dict[str, Any]) -> list[str]:
    lines = ["## The least-sure slices", "",
             f"How often the slice with the largest real error (false positives + false negatives) is among the {TOP} "
             "least-sure slices, against three slices drawn at random among those holding liver or mask:", "",
             "| results | n | expected wrong voxels (shipped) | voxels near the threshold | expected wrong voxels, no two neighbours | chance |",
             "|---|---|---|---|---|---|"]
    for key, title in (("clean", "held-out subjects"), ("all", "held-out + hard inputs")):
        s = summary["slices"][key]
        lines.append(f"| {title} | {s['results']} | {100 * s['expected_error']:.0f} % | {100 * s['near_threshold']:.0f} % | "
                     f"{100 * s['expected_error_spaced']:.0f} % | {100 * s['chance']:.0f} % |")
    lines += ["", "Results where only one of the first two rankings has the worst slice in its three: "
              + "; ".join(f"{title}: expected wrong voxels {summary['slices'][key]['only_expected_error']}, near the "
                          f"threshold {summary['slices'][key]['only_near_threshold']}"
                          for key, title in (("clean", "held-out subjects"), ("all", "with hard inputs"))) + "."]
    return lines + [""]


def _unseen_section(summary: dict[str, Any]) -> list[str]:
    unseen = summary.get("unseen") or {}
    if not unseen:
        return []
    lines = ["## Inputs no network saw", "",
             "The CHAOS CT sample (another hospital than BTCV) and its hard inputs, with the shipped CT ensemble and "
             "each of its fold networks, estimated with the CT calibration (fitted on BTCV only). Disagreement: 1 - the "
             "mean Dice between each fold network's mask and the ensemble's.", "",
             "| input | disagreement | ensemble: Dice / estimated (range) | fold networks: Dice | fold networks: estimated |",
             "|---|---|---|---|---|"]
    for name, entry in unseen.items():
        if "rows" not in entry:
            continue
        ensemble, folds = entry["rows"][0], entry["rows"][1:]
        lines.append(f"| {name.replace('chaos_ct_', 'CHAOS CT, ')} | {entry['disagreement']:.3f} | {ensemble['dice']:.3f} / "
                     f"{ensemble['estimated']:.3f} ({ensemble['low']:.3f}-{ensemble['high']:.3f})"
                     f"{', flagged' if ensemble['review'] else ''} | "
                     + ", ".join(f"{f['dice']:.3f}" for f in folds) + " | "
                     + ", ".join(f"{f['estimated']:.3f}" for f in folds) + " |")
    others = [(name, entry["estimate"]) for name, entry in unseen.items() if "estimate" in entry]
    if others:
        lines += ["", "TotalSegmentator's examples (no manual reference, so no Dice): "
                  + "; ".join(f"{name.replace('totalsegmentator_', '')}: {text}" for name, text in others) + "."]
    return lines + [""]


def _speed_section(speed: Any) -> list[str]:
    if not speed:
        return []
    machine = speed["machine"]
    lines = ["## Cost", "",
             f"The estimate is sums over the probability map inference already holds: no extra network pass. "
             f"Median of {speed['repeats']} runs on {machine['cpu']} ({machine['cpu_count']} cores, "
             f"{machine['torch_threads']} torch thread(s)), shipped models:", "",
             "| scan | voxels | inference without the estimate | the estimate | share |", "|---|---|---|---|---|"]
    for modality, name in (("mri", "CHAOS MRI subject 5"), ("ct", "CHAOS CT sample")):
        s = speed.get(modality)
        if s:
            lines.append(f"| {name} | {' x '.join(str(n) for n in s['shape'])} | {s['inference_seconds_median']:.2f} s | "
                         f"{1000 * s['estimate_seconds_median']:.0f} ms | {100 * s['estimate_share_of_inference']:.1f} % |")
    return lines + [""]


def _fill_section(results: Path, folder: str) -> list[str]:
    rows = fill_table_rows(results, folder)
    if not rows:
        return []
    subjects = sorted({r["subject"] for r in rows})
    recipe = json.loads(next((results / folder).glob("*.json")).read_text()).get("recipe", {})
    lines = [f"### {FOLDERS[folder][0].upper() + FOLDERS[folder][1:]} ({recipe.get('epochs', '?')} epochs of "
             f"{recipe.get('samples_per_epoch', '?')} slices)", "",
             f"Subjects: {', '.join(subjects)}. Dice on the slices unpainted under both rules (the same slices), mean "
             "over subjects; wins: subjects where `least_sure` scored higher by more than 0.001, losses: lower.", "",
             "| N | largest_gaps | least_sure | least_sure wins / losses | own unpainted slices: gaps / least sure | "
             "whole volume: gaps / least sure |", "|---|---|---|---|---|---|"]
    for n in sorted({r["added"] for r in rows}):
        mine = [r for r in rows if r["added"] == n]
        gaps = [r["largest_gaps"] for r in mine]
        sure = [r["least_sure"] for r in mine]
        wins = sum(s["common"] > g["common"] + 0.001 for s, g in zip(sure, gaps))
        losses = sum(s["common"] < g["common"] - 0.001 for s, g in zip(sure, gaps))
        lines.append(f"| {n} | {np.mean([g['common'] for g in gaps]):.4f} | {np.mean([s['common'] for s in sure]):.4f} | "
                     f"{wins} / {losses} | {np.mean([g['own'] for g in gaps]):.4f} / {np.mean([s['own'] for s in sure]):.4f} | "
                     f"{np.mean([g['volume'] for g in gaps]):.4f} / {np.mean([s['volume'] for s in sure]):.4f} |")
    lines += ["", "Per subject (Dice on the common unpainted slices; the slices each rule chose):", "",
              "| subject | N | before | largest_gaps | least_sure |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['subject']} | {r['added']} | {r['base_common']:.4f} | {r['largest_gaps']['common']:.4f} "
                     f"{r['largest_gaps']['chosen']} | {r['least_sure']['common']:.4f} {r['least_sure']['chosen']} |")
    return lines + [""]


def write_report(results: Path, output: Path) -> None:
    """Assemble docs/quality.md; the hand-written notes (docs/quality_notes.md) are appended."""
    summary = _load(results / "summary.json")
    lines = ["# How sure is a result? The quality estimate and \"paint next here\"", "",
             "Generated by `python bench/quality.py report` from `docs/accuracy_results/quality/` (reproduce every "
             "figure with the commands at the top of `bench/quality.py`). What the estimate is and how to use it: "
             "the notes at the end.", ""]
    if summary:
        lines += _held_out_section(summary) + _slices_section(summary) + _unseen_section(summary)
        lines += ["## The calibrations", "",
                  "`mri` and `ct` are kept in the shipped models' cards (`card.quality`); `generic` is "
                  "`LiverUNetLib.quality.GENERIC_CALIBRATION`, for models without their own.", ""]
        for name, c in summary["calibrations"].items():
            lines.append(f"- {name}: log(1 - Dice) = {c['intercept']:.3f} + {c['slope']:.3f} log(signal), range "
                         f"residuals {c['residual_low']:+.3f} / {c['residual_high']:+.3f}, review below {c['review_below']:.3f}; "
                         f"{c['source']}")
        lines.append("")
    lines += _speed_section(_load(results / "speed.json"))
    fills = [line for folder in FOLDERS for line in _fill_section(results, folder)]
    if fills:
        lines += ["## Paint next here", "",
                  "From every 10th liver slice painted and filled (*Fill from painted slices*, "
                  "`LiverUNetLib.fill.fill_from_painted`), N more slices are painted from the manual reference, chosen "
                  "by the fill's uncertainty (`least_sure`: most expected wrong voxels, never a neighbour of a painted "
                  "or chosen slice) or as the middles of the largest gaps between painted slices (`largest_gaps`), and "
                  "the volume is filled again. Each fill starts from the fold network that never saw the subject (the "
                  "shipped CT model for the CHAOS CT sample).", ""] + fills
    notes_file = output.parent / "quality_notes.md"
    if notes_file.exists():
        lines += [notes_file.read_text().rstrip(), ""]
    temporary = output.with_suffix(".md.part")
    temporary.write_text("\n".join(lines))
    temporary.replace(output)
