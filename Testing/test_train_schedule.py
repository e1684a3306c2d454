"""*Train*'s schedule follows how training starts: the cross-validated 120 epochs from random weights, the short
fine-tuning schedule from a model (LiverUNetLib/train_schedule.py); a value the user gives always wins."""

from __future__ import annotations

import pytest

from cli_phantoms import TINY_SETTINGS
from engine_helpers import one_thread, phantom_cases, trained_phantom_model  # noqa: F401 - autouse fixture
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.model_file import load_model
from LiverUNetLib.progress import Stage
from LiverUNetLib.train_schedule import TRAIN_SCHEDULE
from LiverUNetLib.training import TrainConfig, train

#: the tiny phantom network, with the schedule left to the library (no epochs, no learning rate)
UNSET = {k: v for k, v in TINY_SETTINGS.items() if k not in ("epochs", "learning_rate")}


def test_the_schedule_is_unset_until_training_knows_how_it_starts():
    config = TrainConfig()
    assert config.epochs is None and config.learning_rate is None
    scratch, tuned = config.scheduled(fine_tune=False), config.scheduled(fine_tune=True)
    assert (scratch.epochs, scratch.learning_rate) == (120, 2e-3)
    assert (tuned.epochs, tuned.learning_rate) == (TRAIN_SCHEDULE.finetune_epochs, TRAIN_SCHEDULE.finetune_learning_rate)
    assert tuned.epochs < scratch.epochs and tuned.learning_rate < scratch.learning_rate


def test_values_the_user_gives_win_over_the_schedule():
    config = TrainConfig(epochs=7, learning_rate=1e-3)
    for fine_tune in (False, True):
        assert (config.scheduled(fine_tune).epochs, config.scheduled(fine_tune).learning_rate) == (7, 1e-3)


@pytest.mark.parametrize("settings, message", [({"epochs": 0}, "epochs must be at least 1"),
                                               ({"learning_rate": float("nan")}, "learning rate must be 0 or more"),
                                               ({"learning_rate": -1e-3}, "learning rate must be 0 or more")])
def test_a_bad_schedule_is_refused(settings, message):
    with pytest.raises(LiverUNetError, match=message):
        TrainConfig(**settings)


def _epochs_trained(events) -> set[int]:
    return {e.epochs for e in events if e.stage is Stage.TRAINING and e.epochs}


def test_training_from_a_model_runs_the_fine_tuning_schedule_and_records_it(tmp_path):
    cases = phantom_cases(count=2)
    start, _ = trained_phantom_model(tmp_path)
    events = []
    result = train(cases, TrainConfig(**{**UNSET, "samples_per_epoch": 4}), tmp_path / "tuned.pt", init_model=start,
                   progress=events.append, resume=False)
    assert _epochs_trained(events) == {TRAIN_SCHEDULE.finetune_epochs}
    settings = load_model(result.model_path).card.training["settings"]
    assert settings["epochs"] == TRAIN_SCHEDULE.finetune_epochs
    assert settings["learning_rate"] == TRAIN_SCHEDULE.finetune_learning_rate


def test_training_from_scratch_keeps_the_cross_validated_schedule(tmp_path, monkeypatch):
    """Checked on the resolved config train() hands on; running 120 epochs would only slow the suite."""
    from LiverUNetLib import training

    seen = []
    original = training.TrainConfig.scheduled

    def record(self, fine_tune):
        resolved = original(self, fine_tune)
        seen.append((fine_tune, resolved.epochs, resolved.learning_rate))
        raise StopIteration  # stop before any epoch: the resolved schedule is what this test checks

    monkeypatch.setattr(training.TrainConfig, "scheduled", record)
    with pytest.raises(StopIteration):
        train(phantom_cases(count=1), TrainConfig(**UNSET), tmp_path / "scratch.pt", resume=False)
    assert seen == [(False, 120, 2e-3)]
