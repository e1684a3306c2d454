"""The fine-tuning schedule *Train* ships is the one its cross-validation records measured, and the study that
summarises them reads every fold (bench/studies/train_from_shipped.py, docs/accuracy_notes.md *A few scans*)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from LiverUNetLib.train_schedule import TRAIN_SCHEDULE

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "docs" / "accuracy_results" / "train_schedule"
CHOSEN = "e30_lr5e-4_bw5_lfw_start"


def _records(tag: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RECORDS.glob(f"generalisation_k5_{tag}_n3_fold*.json"))]


def test_the_shipped_fine_tuning_schedule_is_the_measured_one():
    records = _records(CHOSEN)
    assert len(records) == 5 and {r["fold"] for r in records} == set(range(5))
    for record in records:
        assert record["recipe"]["epochs"] == TRAIN_SCHEDULE.finetune_epochs
        assert record["recipe"]["learning_rate"] == TRAIN_SCHEDULE.finetune_learning_rate
        assert record["initialised_from"].endswith(f"network {record['fold']}"), "each fold starts from its own network"
        assert len(record["train_subjects"]) == 3 and not set(record["train_subjects"]) & set(record["test_subjects"])


def test_the_schedule_is_within_the_target_of_the_120_epoch_one():
    """The issue's bar: within 0.01 Dice of the 120-epoch schedule on the same new subjects."""
    def dice(tag):
        return {s: row["dice"] for r in _records(tag) for s, row in r["subjects"].items()}

    chosen, baseline = dice(CHOSEN), dice("e120_bw5_lfw_start")
    assert set(chosen) == set(baseline) and len(chosen) == 15
    mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
    assert mean(chosen) >= mean(baseline) - 0.01


def test_the_study_prints_a_row_per_schedule(capsys):
    study = pytest.importorskip("bench.studies.train_from_shipped")
    study.main(["--tags", CHOSEN, "e30_lr5e-4_bw5_lfw_ctstart"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 3 + 2  # header, rule, start alone, from scratch, baseline, two schedules
    assert "30 epochs at 0.0005 from the shipped MRI model's fold network" in lines[5] and "5 of 5" in lines[5]
    assert "from the model liver_ct_default.pt" in lines[6]
