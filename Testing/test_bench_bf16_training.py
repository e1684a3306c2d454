"""bench/bf16_training.py runs both precisions on real slices and says what this CPU trains in."""

from __future__ import annotations

import json

import pytest

from LiverUNetLib.devices import CpuFeatures

bf16_training = pytest.importorskip("bench.bf16_training")


@pytest.mark.data
def test_both_precisions_are_timed_and_the_choice_recorded(mri_image_path, tmp_path):
    out = tmp_path / "bf16.json"
    assert bf16_training.main(["--repeats", "1", "--samples", "16", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [r["precision"] for r in record["runs"]] == ["float32", "bfloat16"]
    assert all(r["slices_per_s"] > 0 for r in record["runs"])
    expected_bf16 = CpuFeatures(**record["cpu_features"]).bf16_is_faster(training=True)
    assert record["training_precision_chosen"] == ("torch.bfloat16" if expected_bf16 else "float32")
