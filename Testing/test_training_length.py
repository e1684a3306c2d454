"""How long training runs, and the CT window it normalises with, are settings recorded in the model file.

With ``every_slice_each_epoch`` off an epoch is exactly ``samples_per_epoch`` slices however many are
labelled (30 densely labelled CTs hold 3,809 slices); on, an epoch still passes over every labelled slice,
the recipe the MRI figures were measured with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cli_phantoms import TINY_SETTINGS
from engine_helpers import box_volume, one_thread  # noqa: F401 - autouse fixture
from LiverUNetLib import training
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.labels import sparse_label_from_mask
from LiverUNetLib.model_file import load_model, save_model
from LiverUNetLib.preprocessing import Modality, PreprocessConfig
from LiverUNetLib.training import TrainConfig, TrainingCase, prepare_case, train


def dense_case(slices: int = 40) -> TrainingCase:
    image, box = box_volume("axial", slices=slices, box=((8, 33), (6, 20), (4, 14)), slice_spacing=8.0)
    return TrainingCase("dense", image, sparse_label_from_mask(image, image.with_array(box.astype(np.uint8)), dense=True))


def sampler(every_slice_each_epoch: bool, seed: int = 0) -> training._SliceSampler:
    config = TrainConfig(**{**TINY_SETTINGS, "batch_size": 4}, every_slice_each_epoch=every_slice_each_epoch)
    prepared = prepare_case(dense_case(), config.preprocess_config(), torch.device("cpu"))
    return training._SliceSampler([prepared], config, 8, torch.Generator().manual_seed(seed))


def drawn_slices(sampler_: training._SliceSampler, samples: int, monkeypatch) -> list[int]:
    drawn: list[int] = []
    monkeypatch.setattr(sampler_, "_sample", lambda case, position: drawn.append(int(case.annotated[position]))
                        or (torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)))
    for _ in sampler_.batches(samples):
        pass
    return drawn


def test_an_epoch_of_fixed_length_draws_exactly_its_samples_and_new_slices_each_time(monkeypatch):
    fixed = sampler(every_slice_each_epoch=False)
    assert fixed.samples(8) == 8 and fixed.steps(8) == 2
    epochs = [drawn_slices(fixed, 8, monkeypatch) for _ in range(10)]
    assert all(len(e) == len(set(e)) == 8 for e in epochs)  # no slice twice within an epoch
    assert len({s for e in epochs for s in e}) > 30  # the epochs together reach (almost) all 40 slices


def test_an_epoch_that_covers_every_slice_grows_with_the_labelled_slices(monkeypatch):
    covering = sampler(every_slice_each_epoch=True)
    assert covering.samples(8) == 40 and covering.steps(8) == 10
    assert sorted(drawn_slices(covering, 8, monkeypatch)) == list(range(40))


def test_the_training_length_and_the_epoch_are_in_progress_and_on_the_card(tmp_path):
    events = []
    settings = dict(TINY_SETTINGS, epochs=2, samples_per_epoch=8, batch_size=4, every_slice_each_epoch=False)
    train([dense_case()], TrainConfig(**settings), tmp_path / "m.pt", progress=events.append, resume=False)
    assert "2 epochs of 8 slices (2 batches of 4)" in " ".join(e.message for e in events)
    card = load_model(tmp_path / "m.pt").card.training
    assert card["samples_per_epoch_run"] == [8] and card["steps_run"] == [4]
    assert card["settings"]["every_slice_each_epoch"] is False


def test_the_ct_window_is_a_training_setting_recorded_in_the_model(tmp_path):
    settings = dict(TINY_SETTINGS, epochs=1, samples_per_epoch=4, batch_size=4, modality="ct", ct_window=(-125, 275))
    train([dense_case(12)], TrainConfig(**settings), tmp_path / "ct.pt", resume=False)
    model = load_model(tmp_path / "ct.pt")
    assert model.preprocess.modality is Modality.CT and model.preprocess.ct_window == (-125.0, 275.0)
    assert model.card.training["settings"]["ct_window"] == [-125.0, 275.0]


@pytest.mark.parametrize("window", [(300, -200), (1, 1), (5,), "wide", "12", None, (True, 275), (float("-inf"), 275)])
def test_a_ct_window_that_is_not_low_below_high_is_refused(window):
    with pytest.raises(LiverUNetError, match="ct_window must be two Hounsfield values"):
        TrainConfig(ct_window=window)


def test_model_files_without_a_ct_window_keep_the_window_they_were_trained_with(tmp_path):
    """Files written before the window was a setting hold no "ct_window" and were normalised with [-200, 300]."""
    from engine_helpers import pointwise_model

    model = pointwise_model()
    model.preprocess = PreprocessConfig(Modality.CT)
    path = save_model(model, tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    del payload["preprocess"]["ct_window"]
    for checksum in ("weights_sha256", "header_sha256"):  # a file of 0.1.0 has neither
        del payload[checksum]
    torch.save(payload, path)
    assert load_model(path).preprocess.ct_window == (-200.0, 300.0)


def test_training_from_scratch_gets_the_ct_window_of_the_shipped_ct_recipe():
    from bench.accuracy_ct import CT_RECIPE

    assert TrainConfig().ct_window == (CT_RECIPE.ct_window_low, CT_RECIPE.ct_window_high)


def test_each_fold_records_its_own_epoch_length_on_the_card(tmp_path):
    """With every slice drawn each epoch, folds with different slice counts run epochs of different length."""
    cases = [replace_name(dense_case(slices), f"c{slices}") for slices in (12, 24, 40)]
    settings = dict(TINY_SETTINGS, epochs=1, samples_per_epoch=4, batch_size=4, folds=3, every_slice_each_epoch=True)
    train(cases, TrainConfig(**settings), tmp_path / "m.pt", resume=False)
    card = load_model(tmp_path / "m.pt").card.training
    train_slices = [sum(c.label.annotated_count for i, c in enumerate(cases) if i not in held) for held in
                    [set(v) for _, v in training.split_cases(3, TrainConfig(**settings))]]
    assert card["samples_per_epoch_run"] == train_slices
    assert card["steps_run"] == [n // 4 for n in train_slices]


def replace_name(case: TrainingCase, name: str) -> TrainingCase:
    return TrainingCase(name, case.image, case.label)


def test_a_resume_checkpoint_that_cannot_be_written_leaves_no_part_file_and_training_goes_on(tmp_path, monkeypatch):
    import errno

    real_save = torch.save

    def disk_full_for_the_checkpoint(payload, path, *args, **kwargs):
        if str(path).endswith(".resume.part"):
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(payload, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_for_the_checkpoint)
    events = []
    settings = dict(TINY_SETTINGS, epochs=2, samples_per_epoch=4, batch_size=4)
    train([dense_case(12)], TrainConfig(**settings), tmp_path / "m.pt", progress=events.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    said = [e.message for e in events if "resume checkpoint" in e.message]
    assert len(said) == 1 and "training goes on without one" in said[0]


def test_a_checkpoint_made_from_another_start_model_is_not_resumed(tmp_path):
    from engine_helpers import pointwise_model

    from LiverUNetLib.errors import CancelledError
    from LiverUNetLib.progress import CancelToken, Stage

    settings = TrainConfig(**dict(TINY_SETTINGS, epochs=2, samples_per_epoch=4, batch_size=4, context_slices=0,
                                  in_plane_spacing_mm=None))
    starts = []
    for gain in (10.0, 20.0):
        model = pointwise_model()
        model.networks[0].head.weight.data.fill_(gain)
        starts.append(save_model(model, tmp_path / f"start{gain:g}.pt"))
    token = CancelToken()
    with pytest.raises(CancelledError):
        train([dense_case(12)], settings, tmp_path / "m.pt", init_model=starts[0], cancel=token,
              progress=lambda e: token.cancel() if e.stage is Stage.TRAINING and e.epoch == 1 else None)
    assert (tmp_path / "m.pt.resume").is_file()
    events = []
    train([dense_case(12)], settings, tmp_path / "m.pt", init_model=starts[1], progress=events.append)
    assert not any("Resuming" in e.message for e in events)


def test_a_ct_window_of_numpy_numbers_is_taken():
    assert TrainConfig(ct_window=np.array([-125.0, 275.0])).ct_window == (-125.0, 275.0)
    assert TrainConfig(ct_window=(np.float32(-100), np.int64(200))).ct_window == (-100.0, 200.0)
