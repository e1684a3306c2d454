"""The shipped default MRI model: it loads, segments a CHAOS subject well, and refuses CT.

The floors are kept well below the cross-validated figures in docs/accuracy.md so the test is stable.
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


@pytest.mark.data
def test_default_model_segments_a_chaos_subject(mri_image_path, mri_label_path):
    image = read_image(mri_image_path("5"))
    reference = read_image(mri_label_path("5"))
    liver = reference.with_array((reference.array == 1).astype(np.uint8))
    result = segment_volume(image, None, InferenceConfig(device="cpu"))
    assert result.mask.same_grid(image)
    assert evaluate(liver, result.mask).dice > 0.85


@pytest.mark.data
def test_default_model_refuses_ct(ct_sample_dir):
    ct = read_image(ct_sample_dir / "dicom")
    with pytest.raises(LiverUNetError, match="looks like CT"):
        segment_volume(ct, None, InferenceConfig(device="cpu"))
