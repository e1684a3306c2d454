"""Training: split by case, k-fold ensembles, early stopping, best checkpoint, progress, cancel,
resume, fine-tuning, bad settings and a phantom the network must learn (tiny models, CPU)."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_phantoms import TINY_SETTINGS, phantom
from engine_helpers import (
    one_thread,  # noqa: F401 - autouse fixture
    LEARNABLE_SETTINGS,
    box_volume,
    dice,
    phantom_cases,
    pointwise_model,
    trained_phantom_model,
)
from LiverUNetLib import training
from LiverUNetLib.errors import CancelledError, LiverUNetError
from LiverUNetLib.inference import InferenceConfig, segment_volume
from LiverUNetLib.labels import SparseLabel, sparse_label_from_mask
from LiverUNetLib.model_file import LiverModel, load_model, save_model
from LiverUNetLib.preprocessing import Modality
from LiverUNetLib.progress import CancelToken, Stage
from LiverUNetLib.training import TrainConfig, TrainingCase, prepare_case, split_cases, train, validation_dice

#: Two optimiser steps per epoch on 32x32 crops of a base-4, depth-2 network.
FAST = dict(TINY_SETTINGS, samples_per_epoch=8, validation_min_cases=2)  # three phantom cases validate


def config(**changes) -> TrainConfig:
    return TrainConfig(**{**FAST, **changes})


@pytest.fixture(scope="module")
def cases():
    return phantom_cases(count=3)


def folder_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- splitting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("count, folds", [(3, 3), (7, 3), (10, 5)])
def test_k_fold_split_partitions_cases(count, folds):
    splits = split_cases(count, TrainConfig(folds=folds))
    assert len(splits) == folds
    held_out = []
    for train_idx, val_idx in splits:
        assert not set(train_idx) & set(val_idx)
        assert sorted(train_idx + val_idx) == list(range(count))
        held_out += val_idx
    assert sorted(held_out) == list(range(count))  # every case validated exactly once
    sizes = [len(v) for _, v in splits]
    assert max(sizes) - min(sizes) <= 1


def test_single_split_holds_out_whole_cases():
    (train_idx, val_idx), = split_cases(5, TrainConfig(validation_fraction=0.2))
    assert len(val_idx) == 1 and len(train_idx) == 4
    assert sorted(train_idx + val_idx) == list(range(5))
    (train_idx, val_idx), = split_cases(10, TrainConfig(validation_fraction=0.34))
    assert len(val_idx) == 3
    assert split_cases(1, TrainConfig()) == [([0], [])]
    assert split_cases(4, TrainConfig(validation_fraction=0.0)) == [([0, 1, 2, 3], [])]


def test_split_is_seeded():
    a = split_cases(12, TrainConfig(folds=3, seed=1))
    assert a == split_cases(12, TrainConfig(folds=3, seed=1))
    assert any(split_cases(12, TrainConfig(folds=3, seed=s)) != a for s in range(2, 6))


def test_more_folds_than_cases():
    with pytest.raises(LiverUNetError, match="at least 4 cases; got 3"):
        split_cases(3, TrainConfig(folds=4))


def test_training_and_validation_never_share_a_case(cases, tmp_path, monkeypatch):
    seen = {"train": [], "validation": []}
    real_sampler, real_validation = training._SliceSampler.__init__, training.validation_dice

    def sampler(self, prepared, *args, **kwargs):
        seen["train"].append({c.name for c in prepared})
        real_sampler(self, prepared, *args, **kwargs)

    def validation(net, prepared, *args, **kwargs):
        seen["validation"].append({c.name for c in prepared})
        return real_validation(net, prepared, *args, **kwargs)

    monkeypatch.setattr(training._SliceSampler, "__init__", sampler)
    monkeypatch.setattr(training, "validation_dice", validation)
    train(cases, config(folds=3), tmp_path / "m.pt", resume=False)
    assert len(seen["train"]) == 3 and len(seen["validation"]) == 3
    for used, held in zip(seen["train"], seen["validation"]):
        assert used and held and not used & held
        assert used | held == {c.name for c in cases}


@pytest.mark.parametrize("orientation", ["axial", "sagittal"])
@pytest.mark.parametrize("enabled", [True, False])
def test_slices_beyond_the_painting_train_as_liver_free_when_asked(orientation, enabled, tmp_path, monkeypatch):
    """Every 5th slice of a 25-slice liver painted: with the setting, the slices farther out than 5 train too."""
    image, box = box_volume(orientation, slices=40, box=((8, 33), (6, 20), (4, 14)), slice_spacing=8.0)
    case = TrainingCase("sparse", image, sparse_label_from_mask(image, image.with_array(box.astype(np.uint8))).keep_every_k(5))
    seen, events = [], []
    real_prepare = training.prepare_case

    def prepare(case, *args, **kwargs):
        seen.append(case.label)
        return real_prepare(case, *args, **kwargs)

    monkeypatch.setattr(training, "prepare_case", prepare)
    train([case], config(liver_free_beyond_painting=enabled, validation_fraction=0.0, epochs=1), tmp_path / "m.pt",
          progress=events.append, resume=False)
    (label,) = seen
    painted = [10, 15, 20, 25, 30]
    assert case.label.annotated.tolist() == painted  # the caller's label is not changed
    expected = list(range(0, 6)) + painted + list(range(35, 40)) if enabled else painted
    assert label.annotated.tolist() == expected
    assert not np.take(label.mask, [s for s in expected if s not in painted], axis=image.slice_axis()).any()
    said = [e.message for e in events if "liver-free" in e.message]
    assert said == (["sparse: 11 slices beyond the painted ones taken as liver-free"] if enabled else [])


def test_the_sampler_draws_slices_by_their_weights(monkeypatch):
    image, box = box_volume("axial", slices=40, box=((8, 33), (6, 20), (4, 14)), slice_spacing=8.0)
    sparse = sparse_label_from_mask(image, image.with_array(box.astype(np.uint8))).keep_every_k(5)
    plain = prepare_case(TrainingCase("plain", image, sparse), config().preprocess_config(), torch.device("cpu"))
    extended = prepare_case(training.with_liver_free_slices(TrainingCase("x", image, sparse)),
                            config().preprocess_config(), torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    assert training._SliceSampler([plain], config(), 8, generator).weights is None  # a shuffled pass, as before
    sampler = training._SliceSampler([extended], config(), 8, generator)
    drawn = []
    monkeypatch.setattr(sampler, "_sample", lambda case, position: drawn.append(int(case.annotated[position]))
                        or (torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)))
    for _ in sampler.batches(20000):
        pass
    counts = np.bincount(drawn, minlength=40)
    painted, free = counts[[10, 15, 20, 25, 30]], counts[list(range(0, 6)) + list(range(35, 40))]
    assert counts[[s for s in range(40) if s not in extended.annotated]].sum() == 0
    # 5 painted slices at weight 1 and 11 liver-free ones at 1/5: 5 / 7.2 of the draws against 2.2 / 7.2
    assert painted.sum() / len(drawn) == pytest.approx(5 / 7.2, abs=0.02)
    assert free.mean() / painted.mean() == pytest.approx(0.2, abs=0.03)


# --- k-fold ensembles ----------------------------------------------------------------------------


def test_k_fold_gives_k_networks_averaged_at_inference(cases, tmp_path):
    result = train(cases, config(folds=3), tmp_path / "kfold.pt", resume=False)
    assert result.epochs_run == [1, 1, 1]
    assert len(result.fold_dice) == 3 and all(0.0 <= d <= 1.0 for d in result.fold_dice)
    assert result.validation_dice == pytest.approx(float(np.mean(result.fold_dice)))
    model = load_model(result.model_path)
    assert len(model.networks) == 3
    assert model.card.validation["split"] == "by case, 3-fold"
    assert model.card.validation["fold_dice"] == [round(d, 4) for d in result.fold_dice]
    # the ensemble's probability is the mean of its members' probabilities
    image, _ = phantom(seed=20)
    options = InferenceConfig(device="cpu", return_probability=True)
    ensemble = segment_volume(image, model, options).probability.array
    members = [
        segment_volume(image, LiverModel([net], model.network_config, model.preprocess), options).probability.array
        for net in model.networks
    ]
    np.testing.assert_allclose(ensemble, np.mean(members, axis=0), atol=2e-5)
    assert not np.allclose(members[0], members[1])  # the folds really are different networks


def cases_each_network_trains_on(monkeypatch) -> list[list[str]]:
    """Filled, as training runs, with the sorted case names each network's sampler draws from."""
    seen: list[list[str]] = []
    real_sampler = training._SliceSampler.__init__

    def sampler(self, prepared, *args, **kwargs):
        seen.append(sorted(c.name for c in prepared))
        real_sampler(self, prepared, *args, **kwargs)

    monkeypatch.setattr(training._SliceSampler, "__init__", sampler)
    return seen


def test_networks_per_fold_train_on_the_same_cases_from_different_starts(cases, tmp_path, monkeypatch):
    seen = cases_each_network_trains_on(monkeypatch)
    events = []
    result = train(cases, config(networks_per_fold=2, validation_fraction=0.34), tmp_path / "two.pt",
                   progress=events.append, resume=False)
    assert len(seen) == 2 and seen[0] == seen[1]  # one split, two networks
    assert len(result.fold_dice) == 2 and result.epochs_run == [1, 1]
    model = load_model(result.model_path)
    assert len(model.networks) == 2
    assert model.card.validation["split"] == "by case, 2 networks per fold"
    assert model.card.training["settings"]["networks_per_fold"] == 2
    first, second = (dict(net.named_parameters()) for net in model.networks)
    assert any(not torch.equal(first[name], second[name]) for name in first)
    trained = [e for e in events if e.stage is Stage.TRAINING]
    assert [(e.fold, e.folds) for e in trained] == [(1, 2), (2, 2)]
    assert [e.message.split(" epoch")[0] for e in trained] == ["network 1/2", "network 2/2"]


def test_folds_times_networks_per_fold(cases, tmp_path, monkeypatch):
    seen = cases_each_network_trains_on(monkeypatch)
    events = []
    result = train(cases, config(folds=3, networks_per_fold=2), tmp_path / "six.pt", progress=events.append,
                   resume=False)
    assert len(load_model(result.model_path).networks) == 6
    # each fold's two networks one after another, on that fold's cases
    assert seen[0] == seen[1] and seen[2] == seen[3] and seen[4] == seen[5]
    assert len({tuple(names) for names in seen}) == 3
    messages = [e.message.split(" epoch")[0] for e in events if e.stage is Stage.TRAINING]
    assert messages[:3] == ["fold 1/3, network 1/2", "fold 1/3, network 2/2", "fold 2/3, network 1/2"]


def test_the_training_runs_helper_orders_each_folds_networks_together():
    splits = [([1, 2], [0]), ([0, 2], [1])]
    assert training.training_runs(splits, 1) == list(enumerate(splits))
    assert [fold for fold, _ in training.training_runs(splits, 3)] == [0, 0, 0, 1, 1, 1]


# --- early stopping and the best checkpoint ------------------------------------------------------


def test_checkpoints_are_compared_only_once_the_learning_rate_has_come_down():
    """The product's schedule, 120 epochs of 32 steps: epochs 66-120 (learning rate below half its peak)."""
    steps = 32
    selectable = [epoch for epoch in range(1, 121) if training.checkpoint_selectable(epoch * steps, 120 * steps)]
    assert selectable == list(range(66, 121))
    assert training.checkpoint_selectable(1, 1)  # a one-step schedule: its only checkpoint


def test_early_stopping_keeps_the_best_checkpoint_of_the_annealed_phase(cases, tmp_path, monkeypatch):
    # 10 epochs of 2 steps: checkpoints from epoch 6 on are compared; the 0.9 at epoch 1 (peak rate) is not kept
    scores = iter([0.9, 0.2, 0.3, 0.3, 0.3, 0.4, 0.6, 0.5, 0.45, 0.1])
    states = []

    def scripted(net, prepared, *args, **kwargs):
        states.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(training, "validation_dice", scripted)
    events = []
    result = train(cases, config(epochs=10, patience=2, validation_fraction=0.34), tmp_path / "m.pt",
                   progress=events.append, resume=False)
    assert result.epochs_run == [9]  # best at epoch 7, no gain in the 2 epochs after it
    assert result.validation_dice == pytest.approx(0.6)
    trained = [e for e in events if e.stage is Stage.TRAINING]
    assert [e.epoch for e in trained] == list(range(1, 10))
    assert [e.validation_dice for e in trained] == [0.9, 0.2, 0.3, 0.3, 0.3, 0.4, 0.6, 0.5, 0.45]  # the curve shows all
    model = load_model(result.model_path)
    assert model.card.validation["mean_dice"] == 0.6
    assert model.card.training["epochs_run"] == [9]
    saved = model.networks[0].state_dict()
    for key, value in states[6].items():  # the weights validated at epoch 7
        assert torch.equal(saved[key], value), key
    assert any(not torch.equal(saved[k], states[0][k]) for k in saved if saved[k].is_floating_point())


def test_patience_never_stops_training_before_the_annealed_phase(cases, tmp_path, monkeypatch):
    scores = iter([0.9] + [0.1] * 9)
    monkeypatch.setattr(training, "validation_dice", lambda *a, **k: next(scores))
    result = train(cases, config(epochs=10, patience=2, validation_fraction=0.34), tmp_path / "m.pt", resume=False)
    assert result.epochs_run == [8]  # first compared at epoch 6, then 2 epochs without gain
    assert result.validation_dice == pytest.approx(0.1)


def test_without_patience_all_epochs_run(cases, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "validation_dice", lambda *a, **k: 0.5)
    result = train(cases, config(epochs=4, patience=0, validation_fraction=0.34), tmp_path / "m.pt", resume=False)
    assert result.epochs_run == [4]


def test_validate_every(cases, tmp_path):
    events = []
    train(cases, config(epochs=4, validate_every=3, validation_fraction=0.34), tmp_path / "m.pt",
          progress=events.append, resume=False)
    dice_by_epoch = {e.epoch: e.validation_dice for e in events if e.stage is Stage.TRAINING}
    assert dice_by_epoch[1] is None and dice_by_epoch[2] is None
    assert dice_by_epoch[3] is not None and dice_by_epoch[4] is not None  # the last epoch always


def test_real_best_checkpoint_matches_the_card(cases, tmp_path):
    settings = config(epochs=4, validation_fraction=0.34, patience=0, learning_rate=1e-2)
    events = []
    result = train(cases, settings, tmp_path / "m.pt", progress=events.append, resume=False)
    seen = [e.validation_dice for e in events if e.stage is Stage.TRAINING]
    assert len(seen) == 4 and all(d is not None for d in seen)
    best = max(seen[2:])  # 4 epochs of 2 steps: epochs 3 and 4 lie in the annealed phase
    assert result.validation_dice == pytest.approx(best)
    model = load_model(result.model_path)
    assert model.card.validation["mean_dice"] == round(best, 4)
    # the saved network really scores the best Dice on the held-out case
    (_, val_idx), = split_cases(len(cases), settings)
    held_out = [prepare_case(cases[i], model.preprocess, torch.device("cpu")) for i in val_idx]
    assert validation_dice(model.networks[0], held_out, model.preprocess.context_slices) == pytest.approx(best, abs=1e-6)


# --- progress ------------------------------------------------------------------------------------


def test_progress_events_carry_epoch_loss_dice_and_eta(tmp_path):
    _, info = trained_phantom_model(tmp_path)
    events = info["events"]
    epochs = LEARNABLE_SETTINGS["epochs"]
    assert events[0].stage is Stage.PREPROCESSING
    assert [e.stage for e in events[-2:]] == [Stage.WRITING, Stage.DONE]
    trained = [e for e in events if e.stage is Stage.TRAINING]
    assert [e.epoch for e in trained] == list(range(1, epochs + 1))
    for e in trained:
        assert e.epochs == epochs and e.fold == 1 and e.folds == 1
        assert e.loss is not None and math.isfinite(e.loss) and e.loss > 0
        assert e.validation_dice is not None and 0.0 <= e.validation_dice <= 1.0
        assert e.eta_seconds is not None and e.eta_seconds >= 0
        assert e.to_dict()["stage"] == "training"
    assert trained[-1].eta_seconds == 0
    fractions = [e.fraction for e in trained]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert trained[-1].loss < trained[0].loss
    assert sum(e.stage is Stage.VALIDATING for e in events) == epochs


# --- a phantom the network can learn -------------------------------------------------------------


def test_bright_phantom_is_learned(tmp_path):
    path, info = trained_phantom_model(tmp_path)
    result = info["result"]
    assert result.validation_dice > 0.8
    model = load_model(path)
    for seed in (30, 31):
        image, truth = phantom(seed=seed)
        assert dice(segment_volume(image, model, InferenceConfig(device="cpu")).mask.array, truth.array) > 0.8


def test_card_records_the_sparse_provenance(cases, tmp_path):
    result = train(cases, config(), tmp_path / "m.pt", resume=False)
    card = load_model(result.model_path).card
    recorded = card.training["cases"]
    assert [c["name"] for c in recorded] == [c.name for c in cases]
    assert [c["annotated_slices"] for c in recorded] == [c.label.annotated.tolist() for c in cases]
    assert [c["slices"] for c in recorded] == [8, 8, 8]
    assert card.training["settings"]["base_channels"] == 4
    assert card.training["initialised_from"].startswith("scratch")
    assert card.training["precision"] == "float32"  # the tiny settings turn mixed precision off
    assert card.name == "m"


def test_sagittal_cases_train_along_their_superior_axis(tmp_path):
    sagittal = []
    for n in range(2):
        image, box = box_volume("sagittal", slices=10, rows=24, cols=26, box=((2, 8), (5 + n, 17), (4, 15 + n)))
        label = sparse_label_from_mask(image, image.with_array(box.astype(np.uint8))).keep_every_k(2)
        assert label.slice_axis == 1
        sagittal.append(TrainingCase(f"sag{n}", image, label))
    result = train(sagittal, config(), tmp_path / "sag.pt", resume=False)
    card = load_model(result.model_path).card
    assert [c["slices"] for c in card.training["cases"]] == [10, 10]


# --- cancellation --------------------------------------------------------------------------------


def cancel_when(token: CancelToken, stage: Stage, epoch=None):
    def callback(event):
        if event.stage is stage and (epoch is None or event.epoch == epoch):
            token.cancel()

    return callback


@pytest.mark.parametrize(
    "stage, epoch",
    [(Stage.PREPROCESSING, None), (Stage.VALIDATING, None), (Stage.TRAINING, 1), (Stage.TRAINING, 3)],
    ids=["preprocessing", "validating", "after-epoch-1", "after-last-epoch"],
)
def test_cancel_leaves_the_previous_model_untouched(cases, tmp_path, stage, epoch):
    output = tmp_path / "model.pt"
    save_model(pointwise_model(), output)
    before = output.read_bytes()
    token = CancelToken()
    with pytest.raises(CancelledError):
        train(cases, config(epochs=3, validation_fraction=0.34), output,
              progress=cancel_when(token, stage, epoch), cancel=token, resume=False)
    assert output.read_bytes() == before
    assert folder_names(tmp_path) == ["model.pt"]


def test_cancel_in_the_middle_of_an_epoch(cases, tmp_path, monkeypatch):
    token = CancelToken()
    real = training.dice_bce_loss
    steps = []

    def loss_then_cancel(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2:
            token.cancel()
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "dice_bce_loss", loss_then_cancel)
    with pytest.raises(CancelledError):
        train(cases, config(epochs=2, samples_per_epoch=32), tmp_path / "m.pt", cancel=token, resume=False)
    assert len(steps) == 2  # stopped at the next batch, not at the end of the epoch
    assert folder_names(tmp_path) == []


def test_a_callback_that_cancels_while_writing_leaves_nothing(cases, tmp_path):
    output = tmp_path / "model.pt"
    output.write_bytes(b"previous model")

    def refuse_to_write(event):
        if event.stage is Stage.WRITING:
            raise CancelledError()

    with pytest.raises(CancelledError):
        train(cases, config(), output, progress=refuse_to_write, resume=False)
    assert output.read_bytes() == b"previous model"
    assert folder_names(tmp_path) == ["model.pt"]


def test_cancel_with_resume_keeps_only_the_checkpoint(cases, tmp_path):
    output = tmp_path / "model.pt"
    token = CancelToken()
    with pytest.raises(CancelledError):
        train(cases, config(epochs=3), output, progress=cancel_when(token, Stage.TRAINING, 1), cancel=token)
    assert folder_names(tmp_path) == ["model.pt.resume"]


# --- resume --------------------------------------------------------------------------------------


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path).networks[0].state_dict()


def test_resume_continues_where_it_stopped(cases, tmp_path):
    settings = config(epochs=3, validation_fraction=0.34)
    reference = train(cases, settings, tmp_path / "straight" / "m.pt", resume=False)

    output = tmp_path / "resumed" / "m.pt"
    token = CancelToken()
    first = []

    def record_and_cancel(event):
        first.append(event)
        if event.stage is Stage.TRAINING and event.epoch == 2:
            token.cancel()

    with pytest.raises(CancelledError):
        train(cases, settings, output, progress=record_and_cancel, cancel=token)
    checkpoint = output.with_name("m.pt.resume")
    assert checkpoint.is_file() and not output.exists()

    second = []
    result = train(cases, settings, output, progress=second.append)
    assert any("Resuming" in e.message and "epoch 2" in e.message for e in second)
    assert [e.epoch for e in second if e.stage is Stage.TRAINING and e.epoch] == [3]
    assert result.epochs_run == [3]
    assert not checkpoint.exists()
    assert folder_names(output.parent) == ["m.pt"]
    # the interrupted and resumed run ends exactly where an uninterrupted one does
    assert result.validation_dice == pytest.approx(reference.validation_dice, abs=1e-6)
    resumed, straight = weights(output), weights(reference.model_path)
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-5, atol=1e-6)


def test_checkpoint_of_other_settings_is_not_resumed(cases, tmp_path):
    output = tmp_path / "m.pt"
    token = CancelToken()
    with pytest.raises(CancelledError):
        train(cases, config(epochs=2), output, progress=cancel_when(token, Stage.TRAINING, 1), cancel=token)
    assert output.with_name("m.pt.resume").is_file()
    events = []
    result = train(cases, config(epochs=2, learning_rate=1e-3), output, progress=events.append)
    assert not any("Resuming" in e.message for e in events)
    assert [e.epoch for e in events if e.stage is Stage.TRAINING] == [1, 2]
    assert result.epochs_run == [2]
    assert folder_names(tmp_path) == ["m.pt"]


def test_checkpoint_of_other_labels_is_not_resumed(cases, tmp_path):
    """A label fixed after an interruption: the checkpoint trained on the old label must not be continued."""
    output = tmp_path / "m.pt"
    token = CancelToken()
    with pytest.raises(CancelledError):
        train(cases, config(epochs=2), output, progress=cancel_when(token, Stage.TRAINING, 1), cancel=token)
    fixed = [replace(cases[0], label=replace(cases[0].label, mask=cases[0].label.mask.copy())), *cases[1:]]
    fixed[0].label.mask[fixed[0].label.mask.nonzero()[0][0]] = 0  # one slice's paint removed
    events = []
    train(fixed, config(epochs=2), output, progress=events.append)
    assert not any("Resuming" in e.message for e in events)
    assert any("Not resuming" in e.message and "labels" in e.message for e in events)
    assert [e.epoch for e in events if e.stage is Stage.TRAINING] == [1, 2]


def test_damaged_checkpoint_is_ignored(cases, tmp_path):
    output = tmp_path / "m.pt"
    output.with_name("m.pt.resume").write_bytes(b"\x00garbage")
    events = []
    train(cases, config(epochs=2), output, progress=events.append)
    assert [e.epoch for e in events if e.stage is Stage.TRAINING] == [1, 2]
    assert folder_names(tmp_path) == ["m.pt"]


# --- fine-tuning ---------------------------------------------------------------------------------


def first_loss(events) -> float:
    return next(e.loss for e in events if e.stage is Stage.TRAINING)


def test_fine_tuning_starts_from_the_init_model(cases, tmp_path):
    init_path, _ = trained_phantom_model(tmp_path)
    settings = config(augmentation_strength=0.0, learning_rate=1e-4)
    scratch, tuned = [], []
    train(cases, settings, tmp_path / "scratch.pt", progress=scratch.append, resume=False)
    result = train(cases, settings, tmp_path / "tuned.pt", init_model=init_path, progress=tuned.append, resume=False)
    assert first_loss(tuned) < first_loss(scratch)
    card = load_model(result.model_path).card
    assert card.training["initialised_from"] == str(init_path)


def test_fine_tuning_with_zero_learning_rate_keeps_the_weights(cases, tmp_path):
    init_path, _ = trained_phantom_model(tmp_path)
    init = load_model(init_path)
    # the settings ask for another architecture: fine-tuning keeps the init model's
    result = train(cases, config(learning_rate=0.0, weight_decay=0.0, base_channels=8, context_slices=1),
                   tmp_path / "tuned.pt", init_model=init, resume=False)
    tuned = load_model(result.model_path)
    assert tuned.network_config == init.network_config
    assert tuned.preprocess == init.preprocess
    after = dict(tuned.networks[0].named_parameters())
    for name, parameter in init.networks[0].named_parameters():
        assert torch.equal(after[name], parameter), name


def test_resume_in_the_second_network_keeps_the_first(cases, tmp_path):
    settings = config(epochs=2, networks_per_fold=2, validation_fraction=0.34)
    reference = train(cases, settings, tmp_path / "straight" / "m.pt", resume=False)
    output = tmp_path / "resumed" / "m.pt"
    token = CancelToken()

    def cancel_in_the_second_network(event):
        if event.stage is Stage.TRAINING and event.fold == 2 and event.epoch == 1:
            token.cancel()

    with pytest.raises(CancelledError):
        train(cases, settings, output, progress=cancel_in_the_second_network, cancel=token)
    second = []
    result = train(cases, settings, output, progress=second.append)
    assert any(e.message == "Resuming network 2/2, epoch 1" for e in second)
    assert [(e.fold, e.epoch) for e in second if e.stage is Stage.TRAINING and e.epoch] == [(2, 2)]
    assert result.epochs_run == [2, 2]
    resumed, straight = load_model(output), load_model(reference.model_path)
    assert len(resumed.networks) == 2
    for before, after in zip(straight.networks, resumed.networks):
        for key, value in before.state_dict().items():
            torch.testing.assert_close(after.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_keep_start_networks_averages_the_tuned_network_with_its_start(cases, tmp_path):
    source = train(cases, config(folds=3), tmp_path / "kfold.pt", resume=False)
    init = load_model(source.model_path)
    events = []
    result = train(cases[:1], config(keep_start_networks=True, keep_start_min_dice=0.0, validation_fraction=0.0,
                                     learning_rate=1e-2), tmp_path / "fill.pt", init_model=source.model_path,
                   progress=events.append, resume=False)
    assert any(e.message.startswith("Keeping the starting network (Dice ") for e in events)
    guarded = load_model(result.model_path)
    assert len(guarded.networks) == 2  # one fine-tuned network and fold 0 of the start, which it began from
    tuned, kept = guarded.networks
    assert torch.equal(kept.head.weight, init.networks[0].head.weight)
    assert not torch.equal(tuned.head.weight, init.networks[0].head.weight)
    assert "with the 1 network(s) it started from" in guarded.card.description
    # from scratch there is no start to keep
    scratch = train(cases[:1], config(keep_start_networks=True, validation_fraction=0.0), tmp_path / "scratch.pt",
                    resume=False)
    assert len(load_model(scratch.model_path).networks) == 1


def test_a_start_that_misses_the_painted_liver_is_not_kept(cases, tmp_path):
    """A starting model from another modality would spoil the average: below the Dice floor it is left out."""
    source = train(cases, config(), tmp_path / "start.pt", resume=False)
    start = load_model(source.model_path)
    prepared = [prepare_case(training.with_liver_free_slices(cases[0]), start.preprocess, torch.device("cpu"))]
    dice = validation_dice(start.networks[0], prepared, start.preprocess.context_slices)
    assert dice < 0.999
    events = []
    result = train(cases[:1], config(keep_start_networks=True, keep_start_min_dice=0.999, validation_fraction=0.0),
                   tmp_path / "fill.pt", init_model=source.model_path, progress=events.append, resume=False)
    assert len(load_model(result.model_path).networks) == 1
    refused = [e.message for e in events if e.message.startswith("Not keeping the starting network")]
    assert refused == [f"Not keeping the starting network: Dice {dice:.3f} on the painted slices, below 0.999; "
                       "the fine-tuned network alone is used"]


def as_ct(case: TrainingCase) -> TrainingCase:
    """The MRI-like phantom in Hounsfield-like units: air around it at about -900, the liver at about 100."""
    image = case.image
    ct = image.__class__(image.array.astype(np.int16) * 2 - 1300, image.ijk_to_ras.copy(), {})
    return TrainingCase(case.name, ct, case.label)


def test_fine_tuning_on_ct_makes_a_ct_model_that_accepts_ct(cases, tmp_path):
    """An MRI model fine-tuned on painted CT (the fill, or Train from the shipped model) must segment CT:
    the new model takes its cases' modality, read from the images, and their intensity normalisation."""
    source = train(cases, config(), tmp_path / "mri.pt", resume=False)
    start = load_model(source.model_path)
    assert start.preprocess.modality is Modality.MRI and start.card.training["settings"]["modality"] == "mri"
    ct_cases = [as_ct(c) for c in cases]
    events = []
    result = train(ct_cases[:1], config(validation_fraction=0.0), tmp_path / "ct.pt", init_model=source.model_path,
                   progress=events.append, resume=False)
    tuned = load_model(result.model_path)
    assert tuned.preprocess == replace(start.preprocess, modality=Modality.CT)
    assert tuned.card.training["settings"]["modality"] == "ct"
    assert [e.message for e in events if e.message.startswith("Fine-tuning")] == [
        "Fine-tuning the MRI model on CT images: the new model is a CT model, with CT intensity normalisation"]
    segment_volume(ct_cases[0].image, tuned, InferenceConfig(device="cpu"))  # accepted: a mismatch would raise
    with pytest.raises(LiverUNetError, match="does not look like CT"):
        segment_volume(cases[0].image, tuned, InferenceConfig(device="cpu"))
    # a start made for MRI is never averaged into a CT fill, however well it scores on the painted slices
    guarded = train(ct_cases[:1], config(validation_fraction=0.0, keep_start_networks=True, keep_start_min_dice=0.0),
                    tmp_path / "guarded.pt", init_model=source.model_path, progress=events.append, resume=False)
    assert len(load_model(guarded.model_path).networks) == 1
    assert [e.message for e in events if "starting network" in e.message] == [
        "Not keeping the starting network: it was made for MRI, these images are CT; the fine-tuned network "
        "alone is used"]
    # an explicit modality still wins over the images
    explicit = train(ct_cases[:1], config(validation_fraction=0.0, modality="mri"), tmp_path / "explicit.pt",
                     init_model=source.model_path, resume=False)
    assert load_model(explicit.model_path).preprocess.modality is Modality.MRI


@pytest.mark.parametrize("ensemble", [{"folds": 3}, {"networks_per_fold": 2}])
def test_fine_tuning_an_ensemble_starts_each_network_from_its_own(cases, tmp_path, ensemble):
    source = train(cases, config(**ensemble), tmp_path / "ensemble.pt", resume=False)
    init = load_model(source.model_path)
    result = train(cases, config(learning_rate=0.0, weight_decay=0.0, **ensemble), tmp_path / "tuned.pt",
                   init_model=source.model_path, resume=False)
    tuned = load_model(result.model_path)
    assert len(tuned.networks) == len(init.networks) > 1
    assert not torch.equal(init.networks[0].head.weight, init.networks[1].head.weight)
    for before, after in zip(init.networks, tuned.networks):
        assert torch.equal(before.head.weight, after.head.weight)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"epochs": 0}, "epochs"),
        ({"folds": 0}, "folds"),
        ({"networks_per_fold": 0}, "networks per fold"),
        ({"keep_start_min_dice": 1.5}, "keep_start_min_dice"),
        ({"batch_size": 0}, "batch size"),
        ({"validation_fraction": 1.0}, "validation fraction"),
        ({"validation_fraction": -0.1}, "validation fraction"),
        ({"depth": 0}, "depth"),
        ({"base_channels": 0}, "base channels"),
        ({"validate_every": 0}, "validate"),
        ({"context_slices": -1}, "context"),
        ({"in_plane_spacing_mm": 0.0}, "spacing"),
        ({"modality": "xray"}, "modality"),
        ({"normalization": "layer"}, "normalization"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_invalid_settings(changes, words):
    with pytest.raises(LiverUNetError, match=f"(?i)invalid training settings.*{words}"):
        TrainConfig(**changes)
    with pytest.raises(LiverUNetError):
        TrainConfig.from_dict(changes)


def test_settings_round_trip_and_unknown_keys():
    settings = TrainConfig(**FAST)
    assert TrainConfig.from_dict(settings.to_dict()) == settings
    with pytest.raises(LiverUNetError, match="Unknown training settings: colour"):
        TrainConfig.from_dict({"colour": "blue"})


def test_bad_cases(cases, tmp_path):
    output = tmp_path / "m.pt"
    with pytest.raises(LiverUNetError, match="No training case"):
        train([], config(), output)
    with pytest.raises(LiverUNetError, match="unique"):
        train([cases[0], cases[0]], config(), output)
    image, label = cases[0].image, cases[0].label
    wrong_shape = SparseLabel(label.mask[:, :-1], label.annotated, 0)
    with pytest.raises(LiverUNetError, match="differs from the image"):
        train([TrainingCase("a", image, wrong_shape)], config(), output)
    unpainted = SparseLabel(label.mask, [], 0)
    with pytest.raises(LiverUNetError, match="no annotated slice"):
        train([TrainingCase("a", image, unpainted)], config(), output)
    wrong_axis = SparseLabel(label.mask, [1], 2)
    with pytest.raises(LiverUNetError, match="slice axis"):
        train([TrainingCase("a", image, wrong_axis)], config(), output)
    with pytest.raises(LiverUNetError, match="at least 4 cases"):
        train(cases, config(folds=4), output)
    broken = image.array.astype(np.float32)
    broken[0, 0, 0] = np.inf
    with pytest.raises(LiverUNetError, match="case 'a'"):
        train([TrainingCase("a", image.with_array(broken), label)], config(), output)
    assert folder_names(tmp_path) == []


def test_unwritable_output_folder(cases, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(LiverUNetError, match="Cannot create the folder"):
        train(cases, config(), blocker / "m.pt")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_output_folder(cases, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(LiverUNetError, match="not writable"):
            train(cases, config(), locked / "m.pt")
    finally:
        locked.chmod(0o700)


def test_failed_final_write_keeps_the_previous_model(cases, tmp_path, monkeypatch):
    import errno

    output = tmp_path / "m.pt"
    output.write_bytes(b"previous model")
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if hasattr(f, "write"):
            f.write(b"half a model")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(LiverUNetError, match="Nothing was changed"):
        train(cases, config(), output, resume=False)
    assert output.read_bytes() == b"previous model"
    assert folder_names(tmp_path) == ["m.pt"]


def test_border_weights_reach_the_training_loss(cases, tmp_path):
    """The product default (w0 = 5) changes what is learned; w0 = 0 is plain BCE. Same seed, same draws."""
    assert TrainConfig().boundary_weight == 5.0

    def weights(w0: float, name: str) -> list[torch.Tensor]:
        path = tmp_path / name
        train(cases, config(boundary_weight=w0), path, resume=False)
        return [p.detach().clone() for p in load_model(path).networks[0].parameters()]

    plain, plain_again, weighted = weights(0.0, "a.pt"), weights(0.0, "b.pt"), weights(5.0, "c.pt")
    assert all(torch.equal(a, b) for a, b in zip(plain, plain_again)), "training must be seeded for this check"
    assert not all(torch.equal(a, c) for a, c in zip(plain, weighted))


def test_fewer_cases_than_a_validation_hold_out_needs_all_train_and_the_log_says_so(cases, tmp_path):
    events = []
    result = train(cases, config(epochs=2, validation_fraction=0.2, validation_min_cases=5, patience=1),
                   tmp_path / "m.pt", progress=events.append, resume=False)
    assert result.validation_dice is None and result.epochs_run == [2]  # the last epoch, no early stop
    assert any("All 3 case(s) train" in e.message and "from 5 cases up" in e.message for e in events)
    assert split_cases(5, TrainConfig(validation_fraction=0.2))[0][1] != []  # the default: five cases validate
    assert split_cases(4, TrainConfig(validation_fraction=0.2)) == [([0, 1, 2, 3], [])]
    with pytest.raises(LiverUNetError, match="validation_min_cases"):
        TrainConfig(validation_min_cases=1)


def test_a_failed_run_raises_its_own_error_with_its_locals_for_a_debugger(tmp_path):
    """Only a torchrun process group makes train() clear the failed run's frames (training_distributed)."""
    with pytest.raises(LiverUNetError, match="No training case given") as caught:
        train([], config(), tmp_path / "none.pt")
    frames, tb = {}, caught.tb
    while tb is not None:
        frames[tb.tb_frame.f_code.co_name] = tb.tb_frame.f_locals
        tb = tb.tb_next
    assert "_train" in frames and "cases" in frames["_train"]
