"""Fault suite, labels: the liver is never guessed.

A label image with several non-zero values (a multi-organ label) or with fractions (a probability
map), and a ``.seg.nrrd`` without a segment of the name asked for (default "Liver"), are refused
by ``train`` and ``evaluate`` with a message listing what was found, instead of training or
scoring every organ as liver.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_phantoms import TINY_SETTINGS, phantom
from LiverUNetLib.cli import main
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.image_io import write_image
from LiverUNetLib.segmentation_file import SegmentInfo, read_label_volume, write_segmentation


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("liverunet: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def organs(tmp_path):
    """A phantom image and a label holding the liver (1) and a 'kidney' (2) beside it."""
    image, liver = phantom(0)
    values = liver.array.copy()
    values[:, :6, :6] = 2
    image_path = write_image(image, tmp_path / "image.nii.gz")
    label_path = write_image(liver.with_array(values), tmp_path / "organs.nii.gz")
    liver_path = write_image(liver, tmp_path / "liver.nii.gz")
    return image, liver, image_path, label_path, liver_path


def train(capsys, image: Path, label: Path, output: Path, *extra: str) -> tuple[int, str, str]:
    return run(capsys, "train", "-q", "--images", str(image), "--labels", str(label), "-o", str(output),
               "--settings", json.dumps(TINY_SETTINGS), *extra)


def test_train_on_a_multi_organ_label_is_refused(organs, tmp_path, capsys):
    _image, _liver, image_path, label_path, _ = organs
    code, _out, err = train(capsys, image_path, label_path, tmp_path / "m.pt")
    assert code == 2
    assert "several non-zero values [1, 2]" in error_line(err) and "--label-value" in error_line(err)
    assert not (tmp_path / "m.pt").exists()


def test_train_on_a_probability_map_is_refused(organs, tmp_path, capsys):
    _image, liver, image_path, _, _ = organs
    probability = liver.with_array(np.clip(liver.array * 0.9 + 0.05, 0, 1).astype(np.float32))
    label_path = write_image(probability, tmp_path / "probability.nii.gz")
    code, _out, err = train(capsys, image_path, label_path, tmp_path / "m.pt")
    assert code == 2
    assert "fractional values" in error_line(err)
    assert not (tmp_path / "m.pt").exists()


def test_train_on_a_segmentation_without_a_liver_segment_is_refused(organs, tmp_path, capsys):
    _image, liver, image_path, _, _ = organs
    label_path = write_segmentation(liver, tmp_path / "spleen.seg.nrrd", [SegmentInfo("Spleen", (0, 0, 1), 1)])
    code, _out, err = train(capsys, image_path, label_path, tmp_path / "m.pt")
    assert code == 2
    assert "no segment named 'Liver'" in error_line(err) and "['Spleen']" in error_line(err)
    assert not (tmp_path / "m.pt").exists()


def test_segment_named_explicitly_is_read(organs, tmp_path):
    _image, liver, _, _, _ = organs
    path = write_segmentation(liver, tmp_path / "one.seg.nrrd", [SegmentInfo("Segment_1", (0, 0, 1), 1)])
    with pytest.raises(LiverUNetError, match="no segment named 'Liver'"):
        read_label_volume(path)
    np.testing.assert_array_equal(read_label_volume(path, segment_name="Segment_1").array, liver.array)


def test_evaluate_against_a_multi_organ_reference_is_refused(organs, capsys):
    _image, _liver, _, label_path, liver_path = organs
    code, out, err = run(capsys, "evaluate", "--reference", str(label_path), "--prediction", str(liver_path))
    assert code == 2 and out == ""
    assert "several non-zero values [1, 2]" in error_line(err)


def test_evaluate_with_the_liver_value_scores_the_liver(organs, capsys):
    _image, _liver, _, label_path, liver_path = organs
    code, out, _err = run(capsys, "evaluate", "--reference", str(label_path), "--prediction", str(liver_path),
                          "--label-value", "1", "--prediction-label-value", "1", "--json")
    assert code == 0
    assert json.loads(out)["dice"] == 1.0


def test_train_with_a_label_value_the_label_does_not_hold_names_the_values_found(organs, tmp_path, capsys):
    _image, _liver, image_path, label_path, _ = organs
    code, _out, err = train(capsys, image_path, label_path, tmp_path / "m.pt", "--label-value", "7")
    assert code == 2
    assert "no voxel with value 7; its non-zero values are [1, 2]" in error_line(err)


def test_evaluate_with_a_label_value_the_reference_does_not_hold_is_refused(organs, capsys):
    _image, _liver, _, label_path, liver_path = organs
    code, out, err = run(capsys, "evaluate", "--reference", str(label_path), "--prediction", str(liver_path),
                         "--label-value", "7", "--prediction-label-value", "1")
    assert code == 2 and out == ""
    assert "no voxel with value 7" in error_line(err)
