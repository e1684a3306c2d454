"""bench/ct_fill.py: the CT fill benchmark's modes reach the product's code, and its table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ct_fill = pytest.importorskip("bench.ct_fill")


def test_the_table_puts_each_mode_under_its_interval(tmp_path: Path):
    for k, mode, dice, painted in ((5, "product", 0.978, 14), (5, "mci", 0.956, 14), (40, "product", 0.952, 2)):
        (tmp_path / f"ct_fill_k{k}_{mode}.json").write_text(json.dumps(
            {"k": k, "mode": mode, "dice_scored_slices": dice, "hd95_mm": 3.0, "painted": list(range(painted))}))
    lines = ct_fill.table(tmp_path).splitlines()
    assert lines[0] == "| fill | k=5 (14 painted) | k=40 (2 painted) |"
    assert lines[2] == "| mci | 0.956 (3.0 mm) |  |"  # the modes keep the docstring's order, mci first
    assert lines[3] == "| product | 0.978 (3.0 mm) | 0.952 (3.0 mm) |"


@pytest.mark.data
def test_the_shipped_model_alone_finds_the_ct_liver_through_the_ct_window(ct_sample_dir, tmp_path):
    """The cheapest real mode (no training): measured 0.926 on the unpainted slices at k=40."""
    ct_fill.run([40], ["start"], tmp_path, threads=None)
    record = json.loads((tmp_path / "ct_fill_k40_start.json").read_text())
    assert record["mode"] == "start" and len(record["painted"]) == 2
    assert record["dice_scored_slices"] > 0.85


def test_a_recipe_variant_gets_a_row_of_its_own(tmp_path: Path):
    for mode, tag, dice in (("ct_model", "", 0.976), ("ct_model", "e2", 0.974), ("mci", "", 0.926)):
        name = f"ct_fill_k10_{mode}{f'_{tag}' if tag else ''}.json"
        (tmp_path / name).write_text(json.dumps({"k": 10, "mode": mode, "tag": tag, "dice_scored_slices": dice,
                                                 "hd95_mm": 3.0, "painted": list(range(7))}))
    lines = ct_fill.table(tmp_path).splitlines()
    assert lines[2:] == ["| mci | 0.926 (3.0 mm) |", "| ct_model | 0.976 (3.0 mm) |", "| ct_model (e2) | 0.974 (3.0 mm) |"]
