"""How sure a segmentation is: per-slice and per-volume uncertainty, an estimated Dice with a range, the slices
to check first.

Everything comes from the probability map inference already holds (no extra network pass):

* per slice, the **expected error**: the sum over its voxels of |mask - p|, the number of voxels that would be
  wrong if the map's probabilities were right. With a fold ensemble the map is the networks' average, so where
  they disagree p sits between 0 and 1 and the disagreement counts here too;
* per slice, the voxels **near the threshold** (p inside ``NEAR_THRESHOLD_BAND``).

Per volume they give the expected Dice loss, sum of expected errors / (sum of p + mask voxels), which is
exactly 1 - the soft Dice between the map and its mask, and the near-threshold share (near-threshold voxels /
mask voxels). A :class:`QualityCalibration` turns the chosen one into an estimated Dice,
log(1 - Dice) = intercept + slope * log(signal), with a range from the residuals measured on held-out subjects;
``bench/quality.py`` fits it per model and keeps it in the model card. The measured rank correlation, flag
and slice figures are in docs/quality.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Mapping, Optional

import numpy as np

from .errors import LiverUNetError

#: p in this open interval counts as near the threshold (a 0.5 threshold; the band is symmetric around it).
NEAR_THRESHOLD_BAND = (0.2, 0.8)
#: Slices listed as least sure (the summary names the first three).
LEAST_SURE_COUNT = 5
#: Slices summed per step: bounds the temporary memory on a large CT.
_CHUNK = 16
#: Signals below this are taken as this (log of zero): an empty map or an all-certain one.
_SIGNAL_FLOOR = 1e-6


class QualitySignal(Enum):
    """The per-volume uncertainty a calibration maps to an estimated Dice."""

    EXPECTED_ERROR = "expected_error"  # 1 - soft Dice of the probability map against its mask
    NEAR_THRESHOLD = "near_threshold"  # voxels near the threshold per mask voxel


@dataclass
class SliceUncertainty:
    """Per-slice sums along the slice axis (index = slice index along that axis)."""

    expected_error: np.ndarray  # sum of |mask - p|
    near_threshold: np.ndarray  # voxels with p inside NEAR_THRESHOLD_BAND
    mask_voxels: np.ndarray
    probability_sum: np.ndarray

    def volume_signal(self, signal: QualitySignal) -> float:
        """The per-volume value of ``signal`` (0.0 for an empty, certain map)."""
        mask = float(self.mask_voxels.sum())
        if signal is QualitySignal.EXPECTED_ERROR:
            total = float(self.probability_sum.sum()) + mask
            return float(self.expected_error.sum()) / total if total > 0 else 0.0
        return float(self.near_threshold.sum()) / mask if mask > 0 else (1.0 if self.near_threshold.sum() else 0.0)


def measure_uncertainty(probability: np.ndarray, mask: np.ndarray, axis: int = 0) -> SliceUncertainty:
    """Per-slice expected error and near-threshold voxels of ``probability`` against the final ``mask``
    (same shape), slices along ``axis``. Works a few slices at a time: no full-size temporary."""
    if probability.shape != mask.shape or probability.ndim != 3:
        raise LiverUNetError(f"The probability map {probability.shape} and the mask {mask.shape} must be one 3D grid.")
    p_all = np.moveaxis(probability, axis, 0)
    m_all = np.moveaxis(mask, axis, 0)
    count = p_all.shape[0]
    low, high = NEAR_THRESHOLD_BAND
    out = {name: np.zeros(count, dtype=np.float64) for name in ("error", "near", "mask", "sum")}
    for start in range(0, count, _CHUNK):
        p = np.asarray(p_all[start:start + _CHUNK], dtype=np.float32)
        m = np.asarray(m_all[start:start + _CHUNK], dtype=bool)
        p_sum = p.sum(axis=(1, 2), dtype=np.float64)
        inside = np.where(m, p, np.float32(0)).sum(axis=(1, 2), dtype=np.float64)
        m_sum = m.sum(axis=(1, 2), dtype=np.float64)
        stop = start + p.shape[0]
        out["sum"][start:stop] = p_sum
        out["mask"][start:stop] = m_sum
        # |m - p| = m + p - 2 m p for a 0/1 mask
        out["error"][start:stop] = np.maximum(m_sum + p_sum - 2.0 * inside, 0.0)
        out["near"][start:stop] = ((p > low) & (p < high)).sum(axis=(1, 2), dtype=np.float64)
    return SliceUncertainty(out["error"], out["near"], out["mask"], out["sum"])


@dataclass(frozen=True)
class QualityCalibration:
    """log(1 - Dice) = intercept + slope * log(signal); the range adds the held-out residuals' quantiles.

    ``review_below``: a result whose estimated Dice is below it is flagged for review. ``source`` says what it
    was fitted on (shown with the estimate)."""

    signal: QualitySignal
    intercept: float
    slope: float
    residual_low: float
    residual_high: float
    review_below: float
    interval: float = 0.8  # the share of held-out results the range is meant to hold
    source: str = ""

    def estimate(self, value: float) -> tuple[float, float, float]:
        """Estimated Dice, low and high for a signal ``value``."""
        centre = self.intercept + self.slope * math.log(max(value, _SIGNAL_FLOOR))

        def dice(log_loss: float) -> float:
            return float(min(1.0, max(0.0, 1.0 - math.exp(min(log_loss, 0.0)))))

        # a larger log-loss is a lower Dice: the high residual gives the low end
        return dice(centre), dice(centre + self.residual_high), dice(centre + self.residual_low)

    def to_dict(self) -> dict[str, Any]:
        return {"signal": self.signal.value, "intercept": self.intercept, "slope": self.slope,
                "residual_low": self.residual_low, "residual_high": self.residual_high,
                "review_below": self.review_below, "interval": self.interval, "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QualityCalibration":
        try:
            numbers = {key: float(data[key]) for key in ("intercept", "slope", "residual_low", "residual_high",
                                                          "review_below", "interval")}
            calibration = cls(QualitySignal(data["signal"]), source=str(data.get("source", "")), **numbers)
        except (KeyError, TypeError, ValueError) as error:
            raise LiverUNetError(f"The model's quality calibration is unreadable ({type(error).__name__}: {error}); "
                                 "re-run bench/quality.py calibrate for it.") from None
        if not all(math.isfinite(v) for v in numbers.values()) or calibration.residual_low > calibration.residual_high:
            raise LiverUNetError("The model's quality calibration holds numbers that are not finite or a reversed "
                                 "range; re-run bench/quality.py calibrate for it.")
        return calibration


#: Used for a model whose card has no calibration (a model trained by a user, a fill model): the fit over the
#: held-out results of both shipped models' cross-validations, pooled (45 subjects, clean and hard inputs, 150
#: results; ``python bench/quality.py calibrate``, docs/quality.md). Held out, a pooled calibration ranked the
#: results as well as one per model (Spearman 0.88 either way).
GENERIC_CALIBRATION = QualityCalibration(
    QualitySignal.EXPECTED_ERROR, intercept=0.4171, slope=1.2197, residual_low=-0.2876, residual_high=0.3694,
    review_below=0.9207, source="no calibration for this model: the generic one of the shipped models' cross-validations")


@dataclass
class QualityEstimate:
    """The estimated Dice of one result, its range, whether to review it, and where it is least sure."""

    estimated_dice: float
    estimated_dice_low: float
    estimated_dice_high: float
    review: bool
    least_sure_slices: list[int]
    slice_axis: int  # numpy (KJI) axis the slice indices run along
    slice_uncertainty: list[float] = field(default_factory=list)  # expected wrong voxels, every slice
    signal: str = QualitySignal.EXPECTED_ERROR.value
    signal_value: float = 0.0
    calibration: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimated_dice": round(self.estimated_dice, 4),
            "estimated_dice_low": round(self.estimated_dice_low, 4),
            "estimated_dice_high": round(self.estimated_dice_high, 4),
            "review": self.review,
            "least_sure_slices": list(self.least_sure_slices),
            "slice_axis": self.slice_axis,
            "slice_uncertainty": [round(v, 1) for v in self.slice_uncertainty],
            "signal": self.signal,
            "signal_value": round(self.signal_value, 6),
            "calibration": self.calibration,
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QualityEstimate":
        try:
            return cls(float(data["estimated_dice"]), float(data["estimated_dice_low"]),
                       float(data["estimated_dice_high"]), bool(data["review"]),
                       [int(s) for s in data["least_sure_slices"]], int(data["slice_axis"]),
                       [float(v) for v in data.get("slice_uncertainty", [])],
                       str(data.get("signal", QualitySignal.EXPECTED_ERROR.value)),
                       float(data.get("signal_value", 0.0)), str(data.get("calibration", "")))
        except (KeyError, TypeError, ValueError) as error:
            raise LiverUNetError(f"Not a quality estimate ({type(error).__name__}: {error}).") from None

    def summary(self) -> str:
        """One line: 'estimated Dice 0.93 (0.90-0.95); least sure on slices 12, 17 and 23'."""
        text = (f"estimated Dice {self.estimated_dice:.2f} "
                f"({self.estimated_dice_low:.2f}-{self.estimated_dice_high:.2f})")
        if self.least_sure_slices:
            text += f"; least sure on {_slice_list(self.least_sure_slices[:3])}"
        if self.review:
            text += "; please review"
        return text


def _slice_list(slices: list[int]) -> str:
    names = [str(s) for s in slices]
    if len(names) == 1:
        return f"slice {names[0]}"
    return "slices " + ", ".join(names[:-1]) + " and " + names[-1]


def least_sure(values: np.ndarray, count: int = LEAST_SURE_COUNT, exclude: Optional[np.ndarray] = None) -> list[int]:
    """Indices of the ``count`` largest ``values`` (above zero), largest first, ties by index; never one in
    ``exclude``."""
    values = np.asarray(values, dtype=np.float64)
    allowed = values > 0
    if exclude is not None and len(exclude):
        allowed[np.asarray(exclude, dtype=np.int64)] = False
    order = np.argsort(-values, kind="stable")
    return [int(i) for i in order if allowed[i]][:count]


def calibration_of(card_quality: Mapping[str, Any]) -> QualityCalibration:
    """The calibration a model card keeps, or the generic one when it keeps none or an unreadable one (the
    estimate's ``calibration`` says which: a damaged entry must not cost the user the mask)."""
    if not card_quality:
        return GENERIC_CALIBRATION
    try:
        return QualityCalibration.from_dict(card_quality)
    except LiverUNetError as error:
        return replace(GENERIC_CALIBRATION, source=f"{error} Used instead: {GENERIC_CALIBRATION.source}")


def estimate_quality(uncertainty: SliceUncertainty, calibration: QualityCalibration, slice_axis: int) -> QualityEstimate:
    """The calibrated estimate for one result's per-slice uncertainty."""
    value = uncertainty.volume_signal(calibration.signal)
    estimated, low, high = calibration.estimate(value)
    if not uncertainty.mask_voxels.any():  # nothing segmented: there is no Dice to estimate, only a review
        estimated, low, high = 0.0, 0.0, 0.0
    return QualityEstimate(
        estimated, low, high, estimated < calibration.review_below,
        least_sure(uncertainty.expected_error), slice_axis,
        [float(v) for v in uncertainty.expected_error], calibration.signal.value, value, calibration.source)
