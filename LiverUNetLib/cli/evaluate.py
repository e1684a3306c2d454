"""``liverunet evaluate``: Dice, distances and volume of segmentations against references."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

from ..errors import LiverUNetError
from .common import EXIT_OK, image_files, match_cases
from .progress_bar import ProgressBar


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this command's options to the ``liverunet`` subcommands."""
    ev = sub.add_parser("evaluate", parents=[common], help="compare segmentations with references",
                        description="Dice, IoU, HD95, ASSD, RAVD, MSSD (mm on the real grid) and "
                        "volume. Files, or folders of files matched by name (one row per case plus "
                        "the mean).")
    ev.add_argument("--reference", required=True, metavar="REF")
    ev.add_argument("--prediction", required=True, metavar="PRED")
    ev.add_argument("--label-value", type=int, metavar="N",
                    help="label to compare in both (default: the non-zero voxels when they all hold one value / the "
                    "Liver segment)")
    ev.add_argument("--prediction-label-value", type=int, metavar="N",
                    help="label in the predictions when it differs from --label-value")
    ev.add_argument("--json", action="store_true", help="print JSON (infinite distances as null)")
    ev.set_defaults(func=run)



def _json_number(value: float) -> Optional[float]:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def run(args: argparse.Namespace, bar: ProgressBar) -> int:
    from ..metrics import METRIC_KEYS, evaluate, mean_metrics
    from ..segmentation_file import read_label_volume

    ref = Path(args.reference).expanduser()
    pred = Path(args.prediction).expanduser()
    for p in (ref, pred):
        if not p.exists():
            raise LiverUNetError(f"Not found: {p}. Check the path.")
    pred_value = args.prediction_label_value if args.prediction_label_value is not None else args.label_value
    if ref.is_dir() != pred.is_dir():
        raise LiverUNetError("Give two files or two folders to --reference and --prediction.")
    if ref.is_dir():
        pairs = match_cases(image_files(ref), image_files(pred), ("reference", "prediction"))
        if not pairs:
            raise LiverUNetError(f"No image files in {ref}.")
    else:
        pairs = [(pred.name, ref, pred)]
    keys = list(METRIC_KEYS) + ["reference_volume_ml"]
    rows = []
    for number, (name, ref_path, pred_path) in enumerate(pairs, start=1):
        if len(pairs) > 1 and bar.enabled:
            print(f"evaluating {number}/{len(pairs)}: {name}", file=sys.stderr)
        reference = read_label_volume(ref_path, args.label_value)
        prediction = read_label_volume(pred_path, pred_value, reference=reference)
        rows.append((name, evaluate(reference, prediction)))

    if args.json:
        if not ref.is_dir():
            data: dict[str, Any] = {k: _json_number(v) for k, v in rows[0][1].to_dict().items()}
        else:
            data = {
                "cases": [{"case": n, **{k: _json_number(v) for k, v in m.to_dict().items()}} for n, m in rows],
                "mean": {k: _json_number(v) for k, v in mean_metrics([m for _, m in rows]).items()},
            }
        print(json.dumps(data, indent=2, allow_nan=False))
        return EXIT_OK

    headers = ["case"] + keys
    table = [[n] + [_fmt_metric(m.to_dict()[k]) for k in keys] for n, m in rows]
    if len(rows) > 1:
        mean = mean_metrics([m for _, m in rows])
        table.append(["mean"] + [_fmt_metric(mean[k]) for k in keys])
    widths = [max(len(str(r[i])) for r in [headers] + table) for i in range(len(headers))]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    return EXIT_OK


def _fmt_metric(value: float) -> str:
    if not math.isfinite(value):
        return "inf"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


# --------------------------------------------------------------------------------------------
