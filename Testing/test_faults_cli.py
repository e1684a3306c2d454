"""Fault suite, the command line: what a bad argument or output gets.

Each case ends in one ``liverunet: error:`` line naming the problem, a non-zero exit code and no
file changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_phantoms import TINY_SETTINGS, write_phantom
from LiverUNetLib.cli import main


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


def train(capsys, image: Path, label: Path, *extra: str) -> tuple[int, str]:
    """``liverunet train`` with settings that train in a second where a refusal is missing."""
    return run(capsys, "train", "-q", "--images", str(image), "--labels", str(label),
               "--settings", json.dumps(TINY_SETTINGS), *extra)


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("liverunet: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def case(tmp_path) -> tuple[Path, Path]:
    return write_phantom(tmp_path / "data", "1")


@pytest.mark.parametrize("which", ["image", "label"])
def test_train_output_that_is_an_input_is_refused(case, capsys, which):
    image, label = case
    target = image if which == "image" else label
    before = target.read_bytes()
    code, err = train(capsys, image, label, "-o", str(target))
    assert code == 2
    assert ".pt" in error_line(err)
    assert target.read_bytes() == before


def test_train_output_that_is_the_init_model_is_refused(case, tmp_path, capsys):
    image, label = case
    init = tmp_path / "start.pt"
    assert train(capsys, image, label, "-o", str(init))[0] == 0
    before = init.read_bytes()
    code, err = train(capsys, image, label, "--init", str(init), "-o", str(init))
    assert code == 2
    assert "--init model" in error_line(err)
    assert init.read_bytes() == before


def test_train_output_not_ending_in_pt_is_refused(case, tmp_path, capsys):
    image, label = case
    code, err = train(capsys, image, label, "-o", str(tmp_path / "model.nii.gz"))
    assert code == 2
    assert "does not end in .pt" in error_line(err)
    assert not (tmp_path / "model.nii.gz").exists()
