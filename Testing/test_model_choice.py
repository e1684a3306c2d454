"""With no model given, every entry point runs the shipped model of the image's modality and says which.

The shipped files are replaced by tiny hand-built models in a temporary folder (``shipped_models.MODELS_FOLDER``),
so the choice is tested without the real weights; ``test_default_model.py`` runs the real ones on real data.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cli_phantoms import phantom
from engine_helpers import one_thread, pointwise_model  # noqa: F401 - autouse fixture
from LiverUNetLib import shipped_models
from LiverUNetLib.cli import main
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.image_io import write_image
from LiverUNetLib.inference import InferenceConfig, segment_volume
from LiverUNetLib.model_file import choose_shipped_model, load_model, save_model, shipped_start_model
from LiverUNetLib.preprocessing import Modality, image_modality
from LiverUNetLib.progress import CancelToken
from LiverUNetLib.volume import Volume


def ct_with_air(seed: int = 0) -> Volume:
    """CT in Hounsfield units: air around a soft-tissue body."""
    rng = np.random.default_rng(seed)
    array = np.full((6, 32, 32), -1000.0, np.float32)
    array[:, 6:26, 6:26] = rng.normal(50, 20, (6, 20, 20))
    return Volume(array, np.diag([1.5, 1.5, 3.0, 1.0]))


def ct_clipped_to_soft_tissue(seed: int = 0) -> Volume:
    """CT as BTCV stores it: HU clipped to [-125, 275], so no voxel shows air."""
    return ct_with_air(seed).with_array(np.clip(ct_with_air(seed).array, -125, 275))


def mri(seed: int = 0) -> Volume:
    """An MRI-like phantom without a DICOM modality, as a NIfTI file gives it."""
    image = phantom(seed)[0]
    return Volume(image.array.astype(np.float32), image.ijk_to_ras)


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> dict[str, Path]:
    """Both shipped models, as tiny models of their modality, in a temporary models folder."""
    monkeypatch.setattr(shipped_models, "MODELS_FOLDER", tmp_path)
    paths = {}
    for modality in (Modality.CT, Modality.MRI):
        model = pointwise_model()
        model.preprocess = replace(model.preprocess, modality=modality)
        model.card.name = f"tiny {modality.name}"
        paths[modality.value] = save_model(model, tmp_path / shipped_models.SHIPPED_MODEL_FILES[modality.value])
    return paths


@pytest.mark.parametrize("volume, modality, because", [
    (ct_with_air(), Modality.CT, "below -500"),
    (ct_clipped_to_soft_tissue(), Modality.CT, "a Hounsfield window's floor"),
    (mri(), Modality.MRI, "no negative values"),
    (Volume(np.full((4, 8, 8), 100.0, np.float32), np.eye(4), {"modality": "CT"}), Modality.CT, "DICOM Modality is CT"),
    (Volume(np.full((4, 8, 8), -300.0, np.float32), np.eye(4), {"modality": "MR"}), Modality.MRI, "DICOM Modality is MR"),
])
def test_the_image_modality_comes_from_dicom_first_then_the_intensities(volume, modality, because):
    found, reason = image_modality(volume)
    assert found is modality and because in reason


def test_an_image_that_is_neither_ct_nor_mri_is_refused_not_guessed():
    normalised = mri().array
    normalised = (normalised - normalised.mean()) / normalised.std()
    with pytest.raises(LiverUNetError, match="Cannot tell whether this image is CT or MRI") as info:
        image_modality(Volume(normalised, np.eye(4)))
    assert "--model" in str(info.value) and "\n" not in str(info.value)


def test_ct_gets_the_ct_model_and_mri_the_mri_model(shipped):
    assert choose_shipped_model(ct_clipped_to_soft_tissue()).path == shipped["ct"]
    assert choose_shipped_model(mri()).path == shipped["mri"]
    choice = choose_shipped_model(ct_with_air())
    assert choice.modality is Modality.CT and "CT model (liver_ct_default.pt)" in choice.describe()
    assert choose_shipped_model(mri(), "ct").path == shipped["ct"]  # the user said CT


def test_segment_volume_without_a_model_says_which_ran(shipped):
    config = InferenceConfig(device="cpu")
    assert "shipped CT model" in segment_volume(ct_with_air(), None, config).model
    assert "shipped MRI model" in segment_volume(mri(), None, config).model
    assert "tiny CT" in segment_volume(ct_with_air(), load_model(shipped["ct"]), config).model


def test_a_model_chosen_explicitly_is_still_checked_against_the_image(shipped):
    with pytest.raises(LiverUNetError, match="looks like CT"):
        segment_volume(ct_clipped_to_soft_tissue(), shipped["mri"], InferenceConfig(device="cpu"))


def test_training_starts_from_the_shipped_model_of_the_images_modality(shipped, tmp_path):
    assert shipped_start_model([ct_with_air()]) == shipped["ct"]
    assert shipped_start_model([mri()]) == shipped["mri"]
    shipped["ct"].unlink()  # a build with the MRI model alone: fine-tuning makes it a CT model
    assert shipped_start_model([ct_with_air()]) == shipped["mri"]
    shipped["mri"].unlink()
    assert shipped_start_model([ct_with_air()]) is None


def test_the_cli_picks_a_model_per_image_and_says_which(shipped, tmp_path, capsys):
    folder = tmp_path / "scans"
    folder.mkdir()
    write_image(ct_with_air(), folder / "ct.nii.gz")
    write_image(mri(), folder / "mri.nii.gz")
    assert main(["segment", str(folder), "-o", str(tmp_path / "out"), "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "ct.nii.gz: using the shipped CT model" in err
    assert "mri.nii.gz: using the shipped MRI model" in err
    assert main(["segment", str(folder / "mri.nii.gz"), "-o", str(tmp_path / "m.nii.gz"), "--modality", "ct",
                 "--device", "cpu", "--quiet"]) == 2  # the CT model on an MRI: refused with what to do
    assert "does not look like CT" in capsys.readouterr().err


def test_the_worker_segments_and_fills_with_the_shipped_model_of_the_images_modality(shipped, tmp_path):
    from LiverUNetLib.worker import run_job

    image = tmp_path / "ct.nrrd"
    volume = ct_with_air()
    write_image(volume, image)
    events = []
    result = run_job({"kind": "segment", "input": str(image), "output": str(tmp_path / "liver.nrrd"),
                      "device": "cpu"}, events.append, CancelToken())
    assert "shipped CT model" in result["model"]
    label = tmp_path / "painted.nrrd"
    painted = np.zeros(volume.array.shape, np.uint8)
    painted[2:4, 10:20, 10:20] = 1
    write_image(volume.with_array(painted), label)
    settings = {"epochs": 1, "samples_per_epoch": 8, "batch_size": 4, "device": "cpu", "mixed_precision": False,
                "validation_fraction": 0.0, "crop_size": 16, "in_plane_spacing_mm": None, "context_slices": 0}
    trained = run_job({"kind": "train", "cases": [{"name": "ct", "image": str(image), "label": str(label)}],
                       "output": str(tmp_path / "fill.pt"), "settings": settings, "init": "shipped"}, events.append, CancelToken())
    card = load_model(trained["model"]).card
    assert card.training["initialised_from"] == str(shipped["ct"])
    assert json.dumps(card.training)  # the card stays plain data


@pytest.mark.parametrize("values", [(0, 1), (0, 255), tuple(range(14))])
def test_a_mask_or_label_map_given_as_the_scan_is_refused(values, shipped):
    labels = np.resize(np.asarray(values, np.uint8), (6, 32, 32))
    volume = Volume(labels, np.diag([1.5, 1.5, 3.0, 1.0]))
    with pytest.raises(LiverUNetError, match="like a label map or mask, not a scan"):
        segment_volume(volume, None, InferenceConfig(device="cpu"))
    with pytest.raises(LiverUNetError, match="cannot be segmented as it is"):
        segment_volume(volume, shipped["mri"], InferenceConfig(device="cpu"))


def test_ct_stored_without_its_rescale_intercept_is_refused_not_taken_for_mri(shipped):
    unscaled = ct_with_air().with_array(np.clip(ct_with_air().array + 1024, 0, None))
    unscaled.array[0, 0, :4] = 1400  # a little bone
    with pytest.raises(LiverUNetError, match="without its rescale intercept"):
        choose_shipped_model(unscaled)
    with pytest.raises(LiverUNetError, match="without its rescale intercept"):
        segment_volume(unscaled, shipped["mri"], InferenceConfig(device="cpu"))


def test_mri_with_small_negative_values_from_resampling_is_still_mri():
    """A B-spline resample of CHAOS MRI reached -20 against bright tissue near 900; TotalSegmentator's MR -47."""
    image = mri().array.astype(np.float32)
    image[:, :2, :] = -10.0  # ringing beside the body, a few per cent of the voxels, small beside tissue near 760
    found, reason = image_modality(Volume(image, np.eye(4)))
    assert found is Modality.MRI and "small beside its bright tissue" in reason


def test_noise_around_zero_is_neither_ct_nor_mri():
    """A subtraction or mean-centred map has values below -50 but no air, floor or fat peak."""
    noise = np.random.default_rng(0).normal(0, 80, (6, 32, 32)).astype(np.float32)
    with pytest.raises(LiverUNetError, match="Cannot tell whether this image is CT or MRI"):
        image_modality(Volume(noise, np.eye(4)))


def test_a_declared_modality_other_than_ct_or_mr_is_refused():
    pet = Volume(np.full((4, 8, 8), 3.0, np.float32), np.eye(4), {"modality": "PT"})
    with pytest.raises(LiverUNetError, match="DICOM Modality is PT: LiverUNet segments CT and MRI only"):
        image_modality(pet)


def test_a_declared_ct_is_segmented_by_the_ct_model_whatever_its_crop(shipped):
    """A CT cropped to soft tissue has no air or fat to show, but its DICOM Modality says CT."""
    tight = Volume(np.random.default_rng(0).normal(60, 20, (6, 32, 32)).astype(np.float32),
                   np.diag([1.5, 1.5, 3.0, 1.0]), {"modality": "CT"})
    result = segment_volume(tight, None, InferenceConfig(device="cpu"))
    assert "shipped CT model" in result.model and not any("look like" in w for w in result.warnings)


def test_training_from_the_shipped_model_honours_the_image_type_the_user_set(shipped):
    assert shipped_start_model([mri()], "ct") == shipped["ct"]
    assert shipped_start_model([ct_with_air()], Modality.MRI) == shipped["mri"]


@pytest.mark.data
@pytest.mark.parametrize("parts, modality", [
    (("totalsegmentator-examples", "example_mr_sm.nii.gz"), Modality.MRI),  # 1.3 % negative, down to -47
    (("totalsegmentator-examples", "example_ct_sm.nii.gz"), Modality.CT),
    (("btcv-ct", "images", "ct_05.nii.gz"), Modality.CT),  # HU clipped to [-125, 275]: no air
    (("chaos-mr-t2", "images", "image_15.nii.gz"), Modality.MRI),
    (("chaos-ct-sample", "dicom"), Modality.CT),
])
def test_every_real_scan_here_gets_its_own_modality(parts, modality):
    from conftest import require_data
    from LiverUNetLib.image_io import read_image

    assert image_modality(read_image(require_data(*parts)))[0] is modality


def test_the_same_mri_at_another_intensity_scale_is_still_mri():
    image = mri().array.astype(np.float32)
    image[:, :2, :] = -10.0
    for scale in (1.0, 5.0, 40.0):  # vendors scale MRI as they like
        assert image_modality(Volume(image * scale, np.eye(4)))[0] is Modality.MRI


def test_a_uniform_image_is_refused_with_nothing_to_segment():
    with pytest.raises(LiverUNetError, match="every voxel holds the same value"):
        image_modality(Volume(np.zeros((4, 8, 8), np.float32), np.eye(4)))


def test_other_and_secondary_capture_count_as_undeclared(shipped):
    """Workstations and anonymisers write OT or SC on re-exported CT: the intensities decide."""
    exported = ct_with_air()
    exported.metadata["modality"] = "OT"
    assert image_modality(exported)[0] is Modality.CT


def test_a_declared_mr_warns_against_the_ct_model_whatever_its_scale(shipped):
    bright = Volume(mri().array.astype(np.float32) * 10, np.eye(4), {"modality": "MR"})
    with pytest.raises(LiverUNetError, match="does not look like CT"):
        segment_volume(bright, shipped["ct"], InferenceConfig(device="cpu"))


@pytest.mark.data
def test_a_ct_cropped_close_to_the_liver_is_still_ct():
    """The CHAOS CT cut to the liver's box and shrunk: 3-5 % air, too little fat for the fat rule."""
    from conftest import require_data
    from LiverUNetLib.image_io import read_image

    ct = read_image(require_data("chaos-ct-sample", "dicom"))
    liver = read_image(require_data("chaos-ct-sample", "liver_gt.nii.gz")).array > 0
    k, j, i = (np.flatnonzero(liver.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    crop = ct.array[k[0]:k[-1] + 1, j[0] + 60:j[-1] + 1 - 60, i[0] + 60:i[-1] + 1 - 60].astype(np.float32)
    assert image_modality(Volume(crop, np.eye(4)))[0] is Modality.CT
