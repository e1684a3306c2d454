"""bench/accuracy_ct.py: the CT cross-validation's folds, its synthetic mass, its report and its ship command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

accuracy_ct = pytest.importorskip("bench.accuracy_ct")
ship_ct = pytest.importorskip("bench.ship_ct")

from LiverUNetLib.volume import Volume  # noqa: E402


def test_the_folds_split_the_30_subjects_into_five_groups_of_six():
    folds = [accuracy_ct.fold_of(s) for s in accuracy_ct.SUBJECTS]
    assert sorted(np.bincount(folds).tolist()) == [6] * 5


def test_the_ct_recipe_uses_the_btcv_window_and_epochs_of_fixed_length():
    recipe = accuracy_ct.CT_RECIPE
    assert (recipe.ct_window_low, recipe.ct_window_high) == (-125.0, 275.0)
    assert recipe.every_slice_each_epoch is False and recipe.samples_per_epoch == 256
    config = accuracy_ct.train_config(recipe, seed=0, modality="ct")
    assert config.ct_window == (-125.0, 275.0) and config.preprocess_config().ct_window == (-125.0, 275.0)


def test_the_synthetic_mass_sits_on_the_right_kidney_with_liver_intensity_and_never_over_the_liver():
    shape = (10, 40, 40)
    image = Volume(np.full(shape, -100.0, np.float32), np.diag([2.0, 2.0, 5.0, 1.0]))
    liver = np.zeros(shape, np.uint8)
    liver[2:8, 5:20, 5:20] = 1
    image.array[liver > 0] = 120.0
    neighbours = np.zeros(shape, np.uint8)
    kidney = neighbours.copy()
    kidney[4:7, 18:24, 8:14] = 1
    neighbours[kidney > 0] = accuracy_ct.BTCV_NEIGHBOURS.index(accuracy_ct.BTCV_RIGHT_KIDNEY) + 1
    pasted, ball = accuracy_ct.synthetic_mass(image, image.with_array(liver), neighbours, radius_mm=10.0)
    assert ball.any() and not (ball & (liver > 0)).any()
    centre = np.argwhere(ball).mean(axis=0)
    assert np.abs(centre - np.argwhere(kidney).mean(axis=0)).max() < 3
    assert abs(pasted.array[ball].mean() - 120.0) < 5  # the liver's own intensity (its spread is 0 here)
    np.testing.assert_array_equal(pasted.array[~ball], image.array[~ball])


def _record(fold: int, tag: str = "") -> dict:
    subjects = [s for s in accuracy_ct.SUBJECTS if accuracy_ct.fold_of(s) == fold]
    row = {"dice": 0.95, "hd95_mm": 5.0, "assd_mm": 1.0, "volume_ml": 1500.0}
    return {"protocol": "ct_generalisation", "tag": tag, "fold": fold, "train_seconds": 600.0, "device": "cpu",
            "recipe": {**accuracy_ct.CT_RECIPE.__dict__, "neighbour_organs": 5 if tag else 0},
            "subjects": {s: row for s in subjects},
            "synthetic_mass": {s: {**row, "mass_taken_as_liver": 0.1, "mass_ml": 100.0} for s in subjects},
            "chaos_ct": {**row, "dice": 0.96}, "machine": "x86_64, 2 cores, torch threads 1"}


def test_the_report_has_a_row_per_recipe_and_the_subjects_per_row(tmp_path: Path):
    for fold in range(5):
        (tmp_path / f"ct_cv_fold{fold}.json").write_text(json.dumps(_record(fold)))
    (tmp_path / "ct_cv_organs_fold0.json").write_text(json.dumps(_record(0, "organs")))
    (tmp_path / "ct_ensemble.json").write_text(json.dumps({"chaos_ct": {"dice": 0.97, "hd95_mm": 4.0}, "seconds": 9}))
    lines = accuracy_ct.report_lines(tmp_path)
    rows = [line for line in lines if line.startswith("| shipped CT recipe") or line.startswith("| organs")]
    assert rows[0].startswith("| shipped CT recipe | 5/5 | 30 | 0.950 ± 0.000 |") and "| 0.970 |" in rows[0]
    assert rows[1].startswith("| organs | 1/5 | 6 |") and "| – |" in rows[1]


def test_the_ship_command_names_only_what_differs_from_the_ct_recipe():
    recipe = {**accuracy_ct.CT_RECIPE.__dict__, "neighbour_organs": 5}
    command = ship_ct.command("organs", recipe)
    assert "--set neighbour_organs=5" in command and "--tag organs" in command and "ct_window" not in command
    assert command.endswith("python bench/accuracy_ct.py --tag organs ship")
