"""The fills as Slicer's *Fill from painted slices* makes them, assembled from measured records.

The fill keeps the network it started from only when that network scores Dice >=
``floor`` on the painted slices (``TrainConfig.keep_start_networks``). Fine-tuning is deterministic on the
CPU, so every such fill equals one measured either way: ``densify_keep_start/`` (start always kept) or
``densify_liver_free/`` (never kept), chosen by ``start_network_check.json``. ``densify_guard/`` holds the
fills that were run through the product path itself; each must equal the record chosen here, or the
assembly is refused. The report shows these beside the peer so the headline figures are in its table and
plot, not only in the notes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PRODUCT_MODE = "product"
KEPT_START = "densify_keep_start"
NO_START = "densify_liver_free"
PRODUCT_PATH = "densify_guard"
START_CHECK = "start_network_check.json"


def _records(folder: Path, mode: str) -> dict[tuple[int, str], dict[str, Any]]:
    """(k, subject) -> record of one densify mode in a results folder."""
    found = {}
    for path in sorted(folder.glob(f"densify_k*_{mode}_*.json")):
        record = json.loads(path.read_text())
        if record.get("mode") == mode:
            found[(record["k"], record["subject"])] = record
    return found


def product_fill_records(results: Path) -> list[dict[str, Any]]:
    """One record per (k, subject) as the product fills, or [] when the measured folders are absent."""
    check_file = results / START_CHECK
    if not (check_file.is_file() and (results / KEPT_START).is_dir() and (results / NO_START).is_dir()):
        return []
    check = json.loads(check_file.read_text())
    floor, start_dice = check["floor"], check["chaos_mri"]
    kept = _records(results / KEPT_START, "finetune_mean")
    not_kept = _records(results / NO_START, "finetune")
    chosen: dict[tuple[int, str], dict[str, Any]] = {}
    for (k, subject), record in kept.items():
        keep = start_dice[f"k{k}"][subject] >= floor
        source = record if keep else not_kept.get((k, subject))
        if source is None:
            raise ValueError(f"k={k} subject {subject}: the start scores below {floor}, and {NO_START}/ has no fill "
                             "without it; run that fill (densify --modes finetune) before reporting")
        chosen[(k, subject)] = {**source, "mode": PRODUCT_MODE, "start_kept": keep,
                                "source": KEPT_START if keep else NO_START}
    for (k, subject), ran in _records(results / PRODUCT_PATH, "finetune").items():
        assembled = chosen.get((k, subject))
        if assembled is None or abs(assembled["dice_scored_slices"] - ran["dice_scored_slices"]) > 1e-9:
            raise ValueError(f"k={k} subject {subject}: the fill run through the product path ({PRODUCT_PATH}/) "
                             f"does not equal the assembled one ({assembled and assembled['source']}/); "
                             "re-run the fills instead of assembling them")
    return [chosen[key] for key in sorted(chosen)]
