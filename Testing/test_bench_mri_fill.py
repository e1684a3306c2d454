"""bench/mri_fill.py: recipe variants from --set, the fold start, and the summary of its records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

mri_fill = pytest.importorskip("bench.mri_fill")


def test_set_changes_recipe_fields_and_adds_train_settings():
    recipe = mri_fill.recipe_from_sets(["finetune_epochs=2", "keep_start_network=false", "crop_size=96"])
    assert recipe.finetune_epochs == 2 and recipe.keep_start_network is False
    assert recipe.train_settings(fine_tune=True)["crop_size"] == 96
    assert mri_fill.recipe_record(recipe)["overrides"] == {"crop_size": 96}
    with pytest.raises(SystemExit):
        mri_fill.recipe_from_sets(["finetune_epochs"])


def test_the_summary_averages_each_recipe_and_interval(tmp_path: Path):
    for tag, subject, dice, seconds in (("a", "3", 0.90, 10.0), ("a", "5", 0.94, 14.0), ("b", "3", 0.80, 5.0)):
        (tmp_path / f"mri_fill_{tag}_k5_s{subject}.json").write_text(json.dumps(
            {"tag": tag, "k": 5, "subject": subject, "dice_scored_slices": dice, "seconds": seconds,
             "cpu_seconds": seconds / 2}))
    summary = mri_fill.summary(tmp_path)
    assert summary[("a", 5)]["dice_unpainted"] == pytest.approx(0.92) and summary[("a", 5)]["subjects"] == ["3", "5"]
    assert summary[("b", 5)]["cpu_seconds"] == pytest.approx(2.5)
    assert "| a | 5 | 2 | 0.9200 | 12.0 | 6.0 |" in mri_fill.table(tmp_path)


@pytest.mark.data
def test_each_subject_starts_from_the_fold_network_that_never_saw_it(mri_image_path):
    """The shipped MRI ensemble is the CV's fold models in fold order: network fold_of(s) alone scores
    subject s as the model card's cross-validation does (15: 0.8026 with threshold 0.5, largest component)."""
    from bench.accuracy import load_subject
    from LiverUNetLib.inference import InferenceConfig, segment_volume
    from LiverUNetLib.metrics import evaluate

    mri_image_path("15")
    image, _, liver = load_subject("15")
    mask = segment_volume(image, mri_fill.fold_start("15"), InferenceConfig(device="cpu", slice_smoothing=False)).mask
    assert evaluate(liver, mask).dice == pytest.approx(0.8026, abs=5e-4)
