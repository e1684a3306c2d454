"""bench/bf16_training.py runs both precisions on real slices and says what this CPU trains in."""

from __future__ import annotations

import json

import pytest

bf16_training = pytest.importorskip("bench.bf16_training")


@pytest.mark.data
def test_both_precisions_are_timed_and_the_choice_recorded(mri_image_path, tmp_path):
    out = tmp_path / "bf16.json"
    assert bf16_training.main(["--repeats", "1", "--samples", "16", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [r["precision"] for r in record["runs"]] == ["float32", "bfloat16"]
    assert all(r["slices_per_s"] > 0 for r in record["runs"])
    features = record["cpu_features"]
    expected_bf16 = features["amx"] or (features["avx512_bf16"] and features["vendor"] == "AuthenticAMD")
    assert record["training_precision_chosen"] == ("torch.bfloat16" if expected_bf16 else "float32")
