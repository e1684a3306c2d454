"""*Fill from painted slices* as one job: ``fill_from_painted``, the worker's ``fill`` job and ``liverunet fill``,
on tiny phantoms with a tiny start model (CPU, seconds)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cli_phantoms import TINY_SETTINGS, phantom
from LiverUNetLib.cli import main
from LiverUNetLib.errors import CancelledError, LiverUNetError
from LiverUNetLib.fill import fill_from_painted
from LiverUNetLib.fill_recipe import FILL_RECIPE
from LiverUNetLib.image_io import read_image, write_image
from LiverUNetLib.labels import sparse_label_from_mask
from LiverUNetLib.mask_files import read_label_volume
from LiverUNetLib.progress import CancelToken, Stage
from LiverUNetLib.segmentation_file import SegmentInfo, liver_segment_info, write_segmentation
from LiverUNetLib.training import TrainConfig, TrainingCase, train
from LiverUNetLib.worker import run_job

PAINTED = [2, 5]  # liver slices of the phantom (its liver spans slices 1-6 of 8)
# a short fill on the tiny network: the recipe's schedule is measured on real data (bench/mri_fill.py)
QUICK = replace(FILL_RECIPE, finetune_epochs=2, samples_per_epoch=32, scratch_epochs=2).with_overrides(
    {"crop_size": 32, "batch_size": 4, "mixed_precision": False})


@pytest.fixture(scope="module")
def start_model(tmp_path_factory) -> Path:
    """A tiny model trained on two phantoms other than the one filled below."""
    folder = tmp_path_factory.mktemp("fill_start")
    cases = []
    for seed in (1, 2):
        image, liver = phantom(seed)
        cases.append(TrainingCase(f"p{seed}", image, sparse_label_from_mask(image, liver)))
    path = folder / "tiny.pt"
    train(cases, TrainConfig(**{**TINY_SETTINGS, "epochs": 3, "samples_per_epoch": 16}), path, resume=False)
    return path


@pytest.fixture
def painted_case(tmp_path):
    """The phantom, its liver painted on PAINTED only (as a label image), and the full liver."""
    image, liver = phantom(0)
    painted = np.zeros_like(liver.array)
    painted[PAINTED] = liver.array[PAINTED]
    image_path, painted_path = tmp_path / "image.nii.gz", tmp_path / "painted.nii.gz"
    write_image(image, image_path)
    write_image(liver.with_array(painted), painted_path)
    return image, image_path, painted_path, liver.array


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["--quiet", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert lines[0].startswith("liverunet: error: ")
    return lines[0]


def test_fill_keeps_painted_slices_and_fills_the_rest(start_model, painted_case):
    image, _, painted_path, liver = painted_case
    painted = sparse_label_from_mask(image, read_image(painted_path))
    result = fill_from_painted(image, painted, start_model, QUICK, device="cpu")
    assert result.painted == PAINTED and result.slice_axis == 0 and result.device == "cpu"
    assert result.mask.array.dtype == np.uint8 and result.mask.same_grid(image)
    np.testing.assert_array_equal(result.mask.array[PAINTED], liver[PAINTED])
    assert result.mask.array[[1, 3, 4, 6]].any(), "nothing was filled between the painted slices"
    assert str(start_model) in result.model and "tuned on the 2 painted slices" in result.model


def test_fill_from_random_weights_takes_the_scratch_schedule(painted_case):
    image, _, painted_path, liver = painted_case
    painted = sparse_label_from_mask(image, read_image(painted_path))
    events = []
    recipe = QUICK.with_overrides({"base_channels": 4, "depth": 2, "in_plane_spacing_mm": 3.0, "epochs": 50})
    result = fill_from_painted(image, painted, None, recipe, device="cpu", progress=events.append)
    np.testing.assert_array_equal(result.mask.array[PAINTED], liver[PAINTED])
    assert result.model.startswith("random weights")
    epochs = {e.epochs for e in events if e.stage is Stage.TRAINING and e.epochs}
    assert epochs == {QUICK.scratch_epochs}, "a fine-tuning epoch count must not shorten training from scratch"
    fractions = [e.fraction for e in events if e.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and events[-1].stage is Stage.DONE


def test_a_cancelled_fill_leaves_no_file(start_model, painted_case, tmp_path, monkeypatch):
    image, _, painted_path, _ = painted_case
    painted = sparse_label_from_mask(image, read_image(painted_path))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    token = CancelToken()

    def cancel_while_training(event):
        if event.stage is Stage.TRAINING:
            token.cancel()

    with pytest.raises(CancelledError):
        fill_from_painted(image, painted, start_model, QUICK, device="cpu", progress=cancel_while_training, cancel=token)
    assert list(scratch.iterdir()) == [], "the tuned model's folder was left behind"


def test_the_worker_fill_job_writes_the_filled_mask(start_model, painted_case, tmp_path):
    _, image_path, painted_path, liver = painted_case
    output = tmp_path / "out" / "filled.nrrd"
    events = []
    job = {"kind": "fill", "image": str(image_path), "painted": str(painted_path), "output": str(output),
           "start_model": str(start_model), "device": "cpu",
           "settings": {"epochs": 2, "samples_per_epoch": 32, "crop_size": 32, "batch_size": 4, "mixed_precision": False}}
    result = run_job(job, events.append, CancelToken())
    assert result["kind"] == "fill" and result["painted_slices"] == PAINTED and result["output"] == str(output)
    filled = read_image(output).array
    np.testing.assert_array_equal(filled[PAINTED], liver[PAINTED])
    assert all(e["event"] == "progress" for e in events) and events[-1]["fraction"] == 1.0
    assert any(e.get("epochs") == 2 for e in events), "the job's settings did not reach the recipe"


def test_a_cancelled_worker_fill_job_writes_nothing(start_model, painted_case, tmp_path):
    _, image_path, painted_path, _ = painted_case
    out = tmp_path / "out"
    out.mkdir()
    token = CancelToken()

    def emit(message):
        if message.get("stage") == "training":
            token.cancel()

    job = {"kind": "fill", "image": str(image_path), "painted": str(painted_path), "output": str(out / "filled.nrrd"),
           "start_model": str(start_model), "device": "cpu",
           "settings": {"epochs": 2, "samples_per_epoch": 32, "crop_size": 32, "batch_size": 4, "mixed_precision": False}}
    with pytest.raises(CancelledError):
        run_job(job, emit, token)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("bad", [{"settings": {"epochs": "many"}}, {"modality": "pet"}, {"painted": "missing.nrrd"}],
                         ids=["setting", "modality", "missing"])
def test_the_worker_fill_job_refuses_bad_input_in_one_line(start_model, painted_case, tmp_path, bad):
    _, image_path, painted_path, _ = painted_case
    job = {"kind": "fill", "image": str(image_path), "painted": str(painted_path), "output": str(tmp_path / "f.nrrd"),
           "start_model": str(start_model), **bad}
    with pytest.raises(LiverUNetError) as error:
        run_job(job, lambda _m: None, CancelToken())
    assert "\n" not in str(error.value)


@pytest.fixture
def quick_recipe(monkeypatch):
    """The command runs ``fill_recipe.FILL_RECIPE``; a short one here (the shipped one is measured on real data)."""
    import LiverUNetLib.fill_recipe as fill_recipe

    monkeypatch.setattr(fill_recipe, "FILL_RECIPE", QUICK)


def test_cli_fill_seg_nrrd_in_and_out_keeps_painted_slices_bit_exact(start_model, painted_case, tmp_path, capsys,
                                                                       quick_recipe):
    image, image_path, painted_path, liver = painted_case
    painted_seg = tmp_path / "painted.seg.nrrd"
    painted = read_image(painted_path)
    write_segmentation(painted, painted_seg, [SegmentInfo("My liver", (0.8, 0.4, 0.3), 1)])
    filled = tmp_path / "filled.seg.nrrd"
    code, out, err = _run(capsys, "fill", str(image_path), str(painted_seg), "-o", str(filled),
                          "--model", str(start_model), "--segment", "My liver", "--device", "cpu")
    assert code == 0, err
    assert "2 painted slices kept" in out and str(filled) in out
    mask = read_label_volume(filled, reference=image).array
    np.testing.assert_array_equal(mask[PAINTED], liver[PAINTED])
    assert mask[[1, 3, 4, 6]].any()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "a staged file was left"


def test_cli_fill_label_image_in_and_out(start_model, painted_case, tmp_path, capsys, quick_recipe):
    _, image_path, painted_path, liver = painted_case
    filled = tmp_path / "filled.nii.gz"
    code, _, err = _run(capsys, "fill", str(image_path), str(painted_path), "-o", str(filled), "--model",
                        str(start_model), "--label-value", "1", "--device", "cpu")
    assert code == 0, err
    np.testing.assert_array_equal(read_image(filled).array[PAINTED], liver[PAINTED])


def test_cli_fill_errors_are_one_line(start_model, painted_case, tmp_path, capsys):
    image, image_path, painted_path, _ = painted_case
    empty = tmp_path / "empty.nii.gz"
    write_image(image.with_array(np.zeros(image.array.shape, np.uint8)), empty)
    shifted = tmp_path / "shifted.nii.gz"
    label = read_image(painted_path)
    moved = label.ijk_to_ras.copy()
    moved[:3, 3] += 100.0
    write_image(type(label)(label.array, moved, {}), shifted)
    seg = tmp_path / "two.seg.nrrd"
    write_segmentation(label, seg, [liver_segment_info()])
    cases = [
        ([str(image_path), str(empty), "-o", str(tmp_path / "a.nii.gz")], "no liver"),
        ([str(image_path), str(shifted), "-o", str(tmp_path / "b.nii.gz")], "grid"),
        ([str(tmp_path / "nope.nii.gz"), str(painted_path), "-o", str(tmp_path / "c.nii.gz")], "Not found"),
        ([str(image_path), str(painted_path), "-o", str(tmp_path / "d.txt")], ".seg.nrrd"),
        ([str(image_path), str(painted_path), "-o", str(painted_path)], "painted label"),
        ([str(image_path), str(seg), "-o", str(tmp_path / "e.nii.gz"), "--segment", "Spleen"], "Spleen"),
        ([str(image_path), str(painted_path), "-o", str(tmp_path / "f.nii.gz"), "--model", str(tmp_path / "no.pt")], "no.pt"),
    ]
    for argv, expected in cases:
        code, _, err = _run(capsys, "fill", *argv, "--device", "cpu")
        assert code == 2, (argv, err)
        assert expected in _one_error_line(err), (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["image.nii.gz", "painted.nii.gz", "empty.nii.gz",
                                                                  "shifted.nii.gz", "two.seg.nrrd"])


def _tune(start_model, tmp_path, **settings):
    from LiverUNetLib.model_file import load_model

    image, liver = phantom(0)
    painted = sparse_label_from_mask(image, liver).keep_every_k(2)
    config = TrainConfig(**{**TINY_SETTINGS, "epochs": 3, "samples_per_epoch": 16, **settings})
    result = train([TrainingCase("p", image, painted)], config, tmp_path / "tuned.pt", init_model=start_model, resume=False)
    return load_model(start_model), load_model(tmp_path / "tuned.pt"), result


def test_a_frozen_encoder_keeps_the_start_models_encoder_and_tunes_the_decoder(start_model, tmp_path):
    start, tuned, _ = _tune(start_model, tmp_path, freeze_encoder=True)
    before, after = start.networks[0].state_dict(), tuned.networks[0].state_dict()
    encoder = [key for key in before if key.startswith("encoders.")]
    assert encoder and all(before[key].equal(after[key]) for key in encoder), "the encoder (or its batch-norm statistics) moved"
    assert any(not before[key].equal(after[key]) for key in before if key.startswith("decoders."))


def test_training_stops_once_the_painted_slices_are_fitted(start_model, tmp_path):
    *_, stopped = _tune(start_model, tmp_path, stop_when_fitted=0.01)
    assert stopped.epochs_run == [1]
    *_, full = _tune(start_model, tmp_path, stop_when_fitted=1.0)
    assert full.epochs_run == [3]
    with pytest.raises(LiverUNetError, match="stop_when_fitted"):
        TrainConfig(stop_when_fitted=1.5)
