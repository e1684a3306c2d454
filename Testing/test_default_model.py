"""The shipped models: each loads with its card, the MRI model segments a CHAOS MRI subject, the CT model the
CHAOS CT sample (another hospital than its BTCV training data), each chosen by the image when no model is given.

The floors are kept well below the measured figures in docs/accuracy.md so the test is stable.
"""

from __future__ import annotations

import numpy as np
import pytest

from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.image_io import read_image
from LiverUNetLib.inference import InferenceConfig, segment_volume
from LiverUNetLib.metrics import evaluate
from LiverUNetLib.model_file import default_model_path, load_model
from LiverUNetLib.preprocessing import Modality
from LiverUNetLib.shipped_models import shipped_model_path


def test_default_model_ships_and_has_a_card():
    path = default_model_path()
    assert path is not None, "LiverUNetLib/models/liver_mri_t2_default.pt must ship with the package"
    assert path.stat().st_size < 30e6
    model = load_model(path)
    assert model.preprocess.modality is Modality.MRI
    card = model.describe()
    assert "CHAOS" in card and "CC BY-NC-SA 4.0" in card
    validation = model.card.validation
    assert 0.0 < validation["dice_mean"] <= 1.0 and "cross-validation" in validation["protocol"]
    assert len(model.networks) == 5  # the fold ensemble


def test_training_defaults_are_the_shipped_models_recipe():
    """Training from scratch (Slicer's Train, ``liverunet train``) gets the cross-validated recipe."""
    from LiverUNetLib.training import TrainConfig

    recipe = load_model(default_model_path()).card.training["recipe"]
    defaults = TrainConfig().scheduled(fine_tune=False)
    for field in ("epochs", "samples_per_epoch", "base_channels", "depth", "in_plane_spacing_mm", "context_slices",
                  "crop_size", "learning_rate", "appearance_augmentation", "mixed_precision", "boundary_weight",
                  "augmentation_strength"):
        assert getattr(defaults, field) == recipe[field], field
    assert defaults.intensity_region.value == recipe["intensity_region"]
    assert defaults.normalization.value == recipe["normalization"]
    # runs made before the coil-shading transform existed trained without it
    assert defaults.bias_field_augmentation == recipe.get("bias_field_augmentation", False)


@pytest.mark.data
def test_default_model_segments_a_chaos_subject(mri_image_path, mri_label_path):
    image = read_image(mri_image_path("5"))
    reference = read_image(mri_label_path("5"))
    liver = reference.with_array((reference.array == 1).astype(np.uint8))
    result = segment_volume(image, None, InferenceConfig(device="cpu"))
    assert result.mask.same_grid(image) and "shipped MRI model" in result.model
    assert evaluate(liver, result.mask).dice > 0.85


def test_ct_model_ships_with_its_card_and_both_models_fit_the_package():
    path = shipped_model_path("ct")
    assert path is not None, "LiverUNetLib/models/liver_ct_default.pt must ship with the package"
    assert path.stat().st_size + default_model_path().stat().st_size < 40e6
    model = load_model(path)
    assert model.preprocess.modality is Modality.CT and model.preprocess.ct_window == (-125.0, 275.0)
    card = model.describe()
    assert "BTCV" in card and "Landman" in card and "bench/accuracy_ct.py" in card
    assert len(model.networks) == 5 and "cross-validation" in model.card.validation["protocol"]
    assert (path.parent / "MODEL_CARD_CT.md").is_file()


@pytest.mark.data
def test_the_ct_model_segments_a_ct_from_another_hospital_with_one_click(ct_sample_dir):
    ct = read_image(ct_sample_dir / "dicom")
    reference = read_image(ct_sample_dir / "liver_gt.nii.gz")
    result = segment_volume(ct, None, InferenceConfig(device="cpu"))
    assert "shipped CT model" in result.model and "DICOM Modality is CT" in result.model
    assert evaluate(reference, result.mask).dice > 0.90


@pytest.mark.data
def test_the_mri_model_chosen_explicitly_refuses_ct(ct_sample_dir):
    ct = read_image(ct_sample_dir / "dicom")
    with pytest.raises(LiverUNetError, match="looks like CT"):
        segment_volume(ct, default_model_path(), InferenceConfig(device="cpu"))


@pytest.mark.data
def test_default_model_ignores_air_around_the_patient(mri_image_path, mri_label_path):
    """A scan with a much larger field of view (zero-filled to 448x448) must segment as well as the original.

    A model that takes its MRI statistics over the whole volume fell from Dice 0.92 to 0.62 on such a scan
    (docs/benchmarks.md); statistics from the body box (``intensity_region="body"``) make it insensitive.
    """
    image = read_image(mri_image_path("5"))
    reference = read_image(mri_label_path("5"))
    pad = ((0, 0), (96, 96), (96, 96))
    shift = np.eye(4)
    shift[:3, 3] = -image.ijk_to_ras[:3, :3] @ np.array([96.0, 96.0, 0.0])  # keep the patient where it was
    padded = image.__class__(np.pad(image.array, pad), shift @ image.ijk_to_ras)
    liver = reference.__class__(np.pad((reference.array == 1).astype(np.uint8), pad), padded.ijk_to_ras)
    original = evaluate(reference.with_array((reference.array == 1).astype(np.uint8)),
                        segment_volume(image, None, InferenceConfig(device="cpu")).mask).dice
    result = segment_volume(padded, None, InferenceConfig(device="cpu"))
    assert evaluate(liver, result.mask).dice > 0.85
    assert evaluate(liver, result.mask).dice > original - 0.03


@pytest.mark.data
@pytest.mark.parametrize("modality", ["mri", "ct"])
def test_the_fill_starts_from_the_shipped_model_of_the_images_modality(modality, mri_image_path, mri_label_path,
                                                                      ct_sample_dir, tmp_path):
    """*Fill from painted slices* with its own settings (one short epoch here) starts from the shipped model of
    the image's modality: on CHAOS MRI painted every 10th slice the MRI model, whose start network finds the
    liver on the painted slices and is averaged in; on the CHAOS CT sample painted every 5th slice the CT model,
    whose fine-tuned network is used alone (on CT that filled better: docs/accuracy_notes.md)."""
    from LiverUNetLib.fill_recipe import FILL_RECIPE
    from LiverUNetLib.labels import sparse_label_from_mask
    from LiverUNetLib.model_file import shipped_start_model
    from LiverUNetLib.training import TrainConfig, TrainingCase, train

    if modality == "mri":
        image, reference, k = read_image(mri_image_path("5")), read_image(mri_label_path("5")), 10
        liver = reference.with_array((reference.array == 1).astype(np.uint8))
    else:
        image, reference, k = read_image(ct_sample_dir / "dicom"), read_image(ct_sample_dir / "liver_gt.nii.gz"), 5
        liver = reference.with_array((reference.array > 0).astype(np.uint8))
    start = shipped_start_model([image])
    assert start == shipped_model_path(modality)
    painted = sparse_label_from_mask(image, liver, dense=True).keep_every_k(k)
    settings = {**FILL_RECIPE.train_settings(fine_tune=True), "epochs": 1, "samples_per_epoch": 8, "device": "cpu"}
    events = []
    result = train([TrainingCase("painted", image, painted)], TrainConfig(**settings), tmp_path / "fill.pt",
                   init_model=start, progress=events.append, resume=False)
    fill = load_model(result.model_path)
    decisions = [e.message for e in events if "starting network" in e.message]
    assert fill.preprocess.modality is Modality(modality)
    assert fill.preprocess.ct_window == load_model(start).preprocess.ct_window
    if modality == "mri":
        assert len(decisions) == 1 and decisions[0].startswith("Keeping the starting network")
        assert len(fill.networks) == 2
    else:
        assert decisions == ["Not keeping the starting network: on CT the fine-tuned network alone fills better "
                             "(docs/accuracy_notes.md); it is used alone"]
        assert len(fill.networks) == 1
    filled = segment_volume(image, fill, InferenceConfig(device="cpu")).mask
    assert evaluate(liver, filled).dice > 0.8


@pytest.mark.data
def test_the_cli_segments_a_ct_dicom_series_with_the_ct_model(ct_sample_dir, tmp_path, capsys):
    from LiverUNetLib.cli import main

    out = tmp_path / "liver.nii.gz"
    assert main(["segment", str(ct_sample_dir / "dicom"), "-o", str(out), "--device", "cpu", "--quiet"]) == 0
    assert "using the shipped CT model (liver_ct_default.pt), since its DICOM Modality is CT" in capsys.readouterr().err
    assert evaluate(read_image(ct_sample_dir / "liver_gt.nii.gz"), read_image(out)).dice > 0.90
