"""How the accuracy benchmarks score a segmentation, and how they print a mean."""

from __future__ import annotations

from typing import Optional

import numpy as np

from LiverUNetLib.metrics import evaluate
from LiverUNetLib.volume import Volume


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = a.sum() + b.sum()
    return float(1.0 if total == 0 else 2 * (a & b).sum() / total)


def metrics_row(reference: Volume, prediction: Volume, slices: Optional[np.ndarray] = None) -> dict[str, float]:
    """Dice/HD95/ASSD of the whole volume, and Dice restricted to ``slices`` when given."""
    m = evaluate(reference, prediction)
    row = {"dice": m.dice, "hd95_mm": m.hd95_mm, "assd_mm": m.assd_mm, "volume_ml": m.volume_ml}
    if slices is not None:
        axis = reference.slice_axis()
        ref = np.take(reference.array > 0, slices, axis=axis)
        pred = np.take(prediction.array > 0, slices, axis=axis)
        row["dice_scored_slices"] = mask_dice(ref, pred)
    return row


def mean_sd(values: list[float], digits: int = 3) -> str:
    """'0.910 ± 0.033' over the finite values (an empty surface gives an infinite HD95), '–' for none."""
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "–"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"
