"""Scores of the quality estimate, never on what it was calibrated on: leave one subject out.

For each held-out subject (all its inputs, clean and hard, together) the calibration is fitted on every other
subject of the same cross-validation and then estimates that subject's results. Scored: Spearman between the
estimated and the real Dice, the "please review" flag's catches (Dice < 0.90) and false alarms, how often the
real Dice lies in the range, and how often the slice with the largest error is among the three least sure.
The calibration kept in each shipped model's card is the fit on all its subjects.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from LiverUNetLib.quality import QualityCalibration, QualitySignal

BAD_DICE = 0.90  # the line: every result below it should be flagged
FALSE_ALARM_CAP = 0.25  # ... while at most this share of the others is
REVIEW_LINES = (0.90, 0.91, 0.92, 0.93, 0.94)  # fixed lines, for the trade-off table
INTERVAL = 0.8  # the range is meant to hold this share of results
DICE_CEILING = 0.999  # log(1 - Dice) needs Dice < 1
TOP = 3  # the slice with the largest error should be among this many least-sure slices
SOURCES = {"mri": "CHAOS MRI T2-SPIR cross-validation (15 held-out subjects, clean, noise, crop, contrast)",
           "ct": "BTCV CT cross-validation (30 held-out subjects, clean, noise, crop)"}


@dataclass
class Case:
    dataset: str
    subject: str
    variant: str
    record: dict[str, Any]

    @property
    def dice(self) -> float:
        return float(self.record["dice"])


def signal_value(record: dict[str, Any], signal: QualitySignal) -> float:
    """The per-volume signal from a record's per-slice sums (as ``SliceUncertainty.volume_signal``)."""
    mask = sum(record["mask_voxels"])
    if signal is QualitySignal.EXPECTED_ERROR:
        total = sum(record["probability_sum"]) + mask
        return sum(record["expected_error"]) / total if total else 0.0
    return sum(record["near_threshold"]) / mask if mask else 0.0


def load_cases(results: Path) -> list[Case]:
    cases = []
    for path in sorted((results / "cases").glob("*.json")):
        data = json.loads(path.read_text())
        for variant, record in data["inputs"].items():
            cases.append(Case(data["dataset"], data["subject"], variant, record))
    return cases


def fit(cases: list[Case], signal: QualitySignal, source: str = "") -> QualityCalibration:
    """Least squares of log(1 - Dice) on log(signal); the range from the residuals' quantiles; the review line
    as high as it can be while it flags at most FALSE_ALARM_CAP of the results with Dice >= BAD_DICE here (a
    line that catches every bad result held out flags most good ones: the fixed-line table of docs/quality.md)."""
    x = np.array([math.log(max(signal_value(c.record, signal), 1e-6)) for c in cases])
    y = np.array([math.log(1.0 - min(c.dice, DICE_CEILING)) for c in cases])
    slope, intercept = np.polyfit(x, y, 1)
    residuals = y - (intercept + slope * x)
    tail = (1.0 - INTERVAL) / 2
    calibration = QualityCalibration(signal, float(intercept), float(slope), float(np.quantile(residuals, tail)),
                                     float(np.quantile(residuals, 1 - tail)), 1.0, INTERVAL, source)
    good = sorted(calibration.estimate(signal_value(c.record, signal))[0] for c in cases if c.dice >= BAD_DICE)
    allowed = int(math.floor(FALSE_ALARM_CAP * len(good)))
    review = float(good[allowed]) if allowed < len(good) else 1.0  # estimate < review: at most ``allowed`` flagged
    return QualityCalibration(signal, round(float(intercept), 4), round(float(slope), 4),
                              round(calibration.residual_low, 4), round(calibration.residual_high, 4),
                              round(review, 4), INTERVAL, source)


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (average ranks for ties)."""
    def ranks(values: list[float]) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        r = np.empty(len(values))
        r[order] = np.arange(len(values), dtype=float)
        values_array = np.asarray(values)
        for value in np.unique(values_array):
            tied = values_array == value
            r[tied] = r[tied].mean()
        return r
    if len(a) < 3:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def leave_one_subject_out(cases: list[Case], signal: QualitySignal, pooled: bool = False) -> list[dict[str, Any]]:
    """Each case estimated by a calibration fitted without its subject, on the other subjects of its own data
    set (``pooled``: of both data sets)."""
    rows = []
    for case in cases:
        others = [c for c in cases if (c.dataset, c.subject) != (case.dataset, case.subject)
                  and (pooled or c.dataset == case.dataset)]
        calibration = fit(others, signal)
        estimated, low, high = calibration.estimate(signal_value(case.record, signal))
        rows.append({"dataset": case.dataset, "subject": case.subject, "variant": case.variant, "dice": case.dice,
                     "estimated": estimated, "low": low, "high": high,
                     "review": estimated < calibration.review_below, "review_below": calibration.review_below})
    return rows


def agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman, flag catches and false alarms, range coverage and mean absolute error of a set of rows."""
    bad = [r for r in rows if r["dice"] < BAD_DICE]
    good = [r for r in rows if r["dice"] >= BAD_DICE]
    return {
        "results": len(rows),
        "spearman": round(spearman([r["estimated"] for r in rows], [r["dice"] for r in rows]), 3),
        "mean_abs_error": round(float(np.mean([abs(r["estimated"] - r["dice"]) for r in rows])), 4) if rows else None,
        "in_range": round(float(np.mean([r["low"] <= r["dice"] <= r["high"] for r in rows])), 3) if rows else None,
        "bad": len(bad), "bad_flagged": sum(r["review"] for r in bad),
        "good": len(good), "good_flagged": sum(r["review"] for r in good),
        "missed": [f"{r['dataset']} {r['subject']} {r['variant']} ({r['dice']:.3f}, est {r['estimated']:.3f})"
                   for r in bad if not r["review"]],
    }


def top_slices(values: list[float], count: int, spacing: int = 0) -> list[int]:
    """The ``count`` largest values' indices, largest first; with ``spacing``, none within that many of one
    already taken."""
    order = np.argsort(-np.asarray(values, dtype=float), kind="stable")
    taken: list[int] = []
    for index in order:
        if values[index] <= 0:
            break
        if all(abs(int(index) - t) > spacing for t in taken):
            taken.append(int(index))
        if len(taken) == count:
            break
    return taken


SLICE_RANKINGS: dict[str, Callable[[dict[str, Any]], list[int]]] = {
    "expected_error": lambda r: top_slices(r["expected_error"], TOP),
    "near_threshold": lambda r: top_slices(r["near_threshold"], TOP),
    "expected_error_spaced": lambda r: top_slices(r["expected_error"], TOP, spacing=1),
}


def worst_slice_hits(cases: list[Case]) -> dict[str, Any]:
    """How often the slice with the largest real error is among the top three of each ranking, and the chance
    of that for three slices drawn at random among those holding liver or mask."""
    scored = [c for c in cases if max(c.record["real_error"]) > 0]
    out: dict[str, Any] = {"results": len(scored)}
    found: dict[str, list[bool]] = {}
    for name, ranking in SLICE_RANKINGS.items():
        found[name] = [int(np.argmax(c.record["real_error"])) in ranking(c.record) for c in scored]
        out[name] = round(float(np.mean(found[name])), 3) if scored else None
    # paired: results one ranking finds and the other misses (a sign test's counts)
    out["only_expected_error"] = sum(e and not n for e, n in zip(found["expected_error"], found["near_threshold"]))
    out["only_near_threshold"] = sum(n and not e for e, n in zip(found["expected_error"], found["near_threshold"]))
    chance = [min(1.0, TOP / max(1, sum(1 for m, r in zip(c.record["mask_voxels"], c.record["reference_voxels"])
                                          if m or r))) for c in scored]
    out["chance"] = round(float(np.mean(chance)), 3) if chance else None
    return out


def calibrate_models(results: Path, write_models: bool = False) -> dict[str, Any]:
    """Score every signal held out, fit each model's calibration on all its subjects, write summary.json."""
    cases = load_cases(results)
    summary: dict[str, Any] = {"bad_dice": BAD_DICE, "interval": INTERVAL, "signals": {}, "calibrations": {}}
    for signal in QualitySignal:
        rows = leave_one_subject_out(cases, signal)
        pooled = leave_one_subject_out(cases, signal, pooled=True)
        by_set = {}
        for dataset in ("mri", "ct"):
            mine = [r for r in rows if r["dataset"] == dataset]
            by_set[f"{dataset}_clean"] = agreement([r for r in mine if r["variant"] == "clean"])
            by_set[f"{dataset}_all"] = agreement(mine)
        by_set["clean"] = agreement([r for r in rows if r["variant"] == "clean"])
        by_set["all"] = agreement(rows)
        by_set["all_pooled_calibration"] = agreement(pooled)
        by_set["fixed_lines"] = {f"{line:.2f}": {
            name: [sum(r["estimated"] < line for r in chosen if r["dice"] < BAD_DICE),
                   sum(r["dice"] < BAD_DICE for r in chosen),
                   sum(r["estimated"] < line for r in chosen if r["dice"] >= BAD_DICE),
                   sum(r["dice"] >= BAD_DICE for r in chosen)]
            for name, chosen in (("clean", [r for r in rows if r["variant"] == "clean"]), ("all", rows))}
            for line in REVIEW_LINES}
        summary["signals"][signal.value] = {"held_out": by_set, "rows": rows}
    summary["slices"] = {"clean": worst_slice_hits([c for c in cases if c.variant == "clean"]),
                         "all": worst_slice_hits(cases)}
    for dataset in ("mri", "ct"):
        mine = [c for c in cases if c.dataset == dataset]
        if mine:
            summary["calibrations"][dataset] = fit(mine, QualitySignal.EXPECTED_ERROR, SOURCES[dataset]).to_dict()
    summary["calibrations"]["generic"] = fit(cases, QualitySignal.EXPECTED_ERROR,
                                             "both shipped models' cross-validations, pooled").to_dict()
    summary["unseen"] = unseen_scores(results, summary["calibrations"])
    (results / "summary.json").write_text(json.dumps(summary, indent=1))
    if write_models:
        from bench.quality_models import write_calibrations

        write_calibrations(summary["calibrations"])
    return summary


def unseen_scores(results: Path, calibrations: dict[str, Any]) -> dict[str, Any]:
    """The CT calibration (fitted on BTCV only) on the CHAOS CT sample and its hard inputs, no network of which
    saw them: the ensemble and each fold network; the ensemble's disagreement beside it."""
    path = results / "unseen.json"
    if not path.exists() or "ct" not in calibrations:
        return {}
    calibration = QualityCalibration.from_dict(calibrations["ct"])
    unseen = json.loads(path.read_text())
    out: dict[str, Any] = {}
    for name, entry in unseen.items():
        if "ensemble" not in entry:
            out[name] = {"estimate": entry["estimate"]["summary"]}
            continue
        rows = []
        for label, record in [("ensemble", entry["ensemble"])] + [(f"fold {i}", r) for i, r in enumerate(entry["folds"])]:
            estimated, low, high = calibration.estimate(signal_value(record, calibration.signal))
            rows.append({"network": label, "dice": round(record["dice"], 4), "estimated": round(estimated, 4),
                         "low": round(low, 4), "high": round(high, 4), "review": estimated < calibration.review_below,
                         "signal": round(signal_value(record, calibration.signal), 4),
                         "worst_slice_in_top3": int(np.argmax(record["real_error"])) in top_slices(record["expected_error"], TOP)})
        out[name] = {"disagreement": round(entry["ensemble"]["disagreement"], 4), "rows": rows}
    return out
