"""Fault suite, the command line: what a bad argument or output gets.

Each case ends in one ``liverunet: error:`` line naming the problem, a non-zero exit code and no
file changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cli_phantoms import TINY_SETTINGS, write_phantom
from LiverUNetLib.cli import main
from LiverUNetLib.image_io import read_image, write_image


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


# ---- arguments and settings that used to end in a Python error --------------------------------------
def test_train_output_name_too_long_is_refused(case, tmp_path, capsys):
    image, label = case
    code, err = train(capsys, image, label, "-o", str(tmp_path / ("m" * 300 + ".pt")))
    assert code == 2
    assert "bytes long" in error_line(err) and "shorter name" in error_line(err)


def test_segment_output_name_too_long_is_refused(case, tmp_path, capsys):
    image, _label = case
    code, err = run(capsys, "segment", "-q", str(image), "-o", str(tmp_path / ("x" * 300 + ".nii.gz")))
    assert code == 2
    assert "bytes long" in error_line(err)


@pytest.mark.parametrize("bad, words", [
    ({"epochs": "many"}, "epochs must be a whole number"),
    ({"learning_rate": "fast"}, "learning_rate must be a finite number"),
    ({"mixed_precision": "yes"}, "mixed_precision must be true or false"),
    ({"ct_window": "wide"}, "ct_window must be a list of numbers"),
])
def test_train_settings_of_the_wrong_type_are_refused(case, tmp_path, capsys, bad, words):
    image, label = case
    code, err = run(capsys, "train", "-q", "--images", str(image), "--labels", str(label),
                    "-o", str(tmp_path / "m.pt"), "--settings", json.dumps({**TINY_SETTINGS, **bad}))
    assert code == 2
    assert words in error_line(err)


@pytest.mark.parametrize("option", ["--learning-rate", "--spacing"])
@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_train_non_finite_or_non_positive_numbers_are_refused(case, tmp_path, capsys, option, value):
    image, label = case
    code, err = train(capsys, image, label, "-o", str(tmp_path / "m.pt"), option, value)
    assert code == 2
    assert "finite number above 0" in error_line(err)
    assert not (tmp_path / "m.pt").exists()


def test_train_network_too_large_for_memory_is_refused_before_loading(case, tmp_path, capsys):
    image, label = case
    code, err = train(capsys, image, label, "-o", str(tmp_path / "m.pt"), "--depth", "12")
    assert code == 2
    line = error_line(err)
    assert "GiB" in line and "--depth" in line
    assert "training on" not in err


@pytest.mark.parametrize("option", [["--depth", "3"], ["--base-channels", "8"], ["--spacing", "2.0"]])
def test_train_init_with_network_options_is_refused(case, tmp_path, capsys, option):
    image, label = case
    init = tmp_path / "start.pt"
    init.write_bytes(b"checked after the options")
    code, err = run(capsys, "train", "-q", "--images", str(image), "--labels", str(label),
                    "--init", str(init), "-o", str(tmp_path / "m.pt"), *option)
    assert code == 2
    assert f"{option[0]} cannot change a model fine-tuned with --init" in error_line(err)


def test_train_init_with_network_settings_is_refused(case, tmp_path, capsys):
    image, label = case
    init = tmp_path / "start.pt"
    init.write_bytes(b"checked after the options")
    code, err = train(capsys, image, label, "--init", str(init), "-o", str(tmp_path / "m.pt"))
    assert code == 2
    assert "depth in --settings" in error_line(err)


def test_worker_case_with_every_k_not_a_number_is_a_clear_error(case, tmp_path):
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetLib.progress import CancelToken
    from LiverUNetLib.worker import run_job

    image, label = case
    job = {"kind": "train", "output": str(tmp_path / "m.pt"), "settings": TINY_SETTINGS,
           "cases": [{"name": "c", "image": str(image), "label": str(label), "every_k": "abc"}]}
    with pytest.raises(LiverUNetError, match=r"Case 'c': 'every_k' must be a whole number; got 'abc'"):
        run_job(job, lambda _m: None, CancelToken())


def test_worker_settings_of_the_wrong_type_are_a_clear_error(case, tmp_path):
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetLib.progress import CancelToken
    from LiverUNetLib.worker import run_job

    image, label = case
    job = {"kind": "train", "output": str(tmp_path / "m.pt"), "settings": {"epochs": "many"},
           "cases": [{"name": "c", "image": str(image), "label": str(label)}]}
    with pytest.raises(LiverUNetError, match="epochs must be a whole number"):
        run_job(job, lambda _m: None, CancelToken())


# ---- outputs checked before the work -----------------------------------------------------------------
@pytest.fixture
def read_only_folder(tmp_path) -> Path:
    """A read-only tmpfs (root ignores permission bits, so chmod cannot make one)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a read-only folder")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {done.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


def test_segment_into_a_read_only_folder_is_refused_before_the_run(case, read_only_folder, capsys, monkeypatch):
    import LiverUNetLib.inference as inference

    def never(*_args, **_kwargs):
        raise AssertionError("segmentation ran although the output cannot be written")

    monkeypatch.setattr(inference, "segment_volume", never)
    image, _label = case
    code, err = run(capsys, "segment", "-q", str(image), "-o", str(read_only_folder / "liver.nii.gz"))
    assert code == 2
    assert "read-only" in error_line(err)


def test_train_into_a_read_only_folder_is_refused_before_loading(case, read_only_folder, capsys):
    image, label = case
    code, err = train(capsys, image, label, "-o", str(read_only_folder / "m.pt"))
    assert code == 2
    assert "read-only" in error_line(err) and "training on" not in err


# ---- batches -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    image, label = write_phantom(folder, "t")
    model = folder / "tiny.pt"
    assert main(["train", "-q", "--images", str(image), "--labels", str(label), "-o", str(model),
                 "--settings", json.dumps(TINY_SETTINGS)]) == 0
    return model


def test_batch_with_bad_files_segments_the_others_and_reports_each(tiny_model, tmp_path, capsys, monkeypatch):
    import LiverUNetLib.inference as inference

    scans = tmp_path / "scans"
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        write_phantom(scans, name, seed=seed)
        (scans / f"label_{name}.nii.gz").unlink()
    (scans / "broken.nii.gz").write_bytes(b"not an image")
    real = inference.segment_volume

    def fails_on_b(volume, *args, **kwargs):
        if volume.metadata.get("source", "").endswith("image_b.nii.gz"):
            raise ValueError("an unexpected failure inside the network")
        return real(volume, *args, **kwargs)

    monkeypatch.setattr(inference, "segment_volume", fails_on_b)
    code, err = run(capsys, "segment", "-q", str(scans), "-o", str(tmp_path / "out"), "--model", str(tiny_model))
    assert code != 0
    assert "2 of 4 images failed" in err
    assert "broken.nii.gz: Cannot read" in err and "image_b.nii.gz: unexpected ValueError" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [  # the batch's report and per-case records too
        ".liverunet-batch", "image_a_liver.nii.gz", "image_c_liver.nii.gz", "report.csv", "report.json"]


def test_segment_a_folder_into_itself_twice_does_not_segment_its_masks(tiny_model, tmp_path, capsys):
    scans = tmp_path / "scans"
    for name, seed in (("a", 1), ("b", 2)):
        write_phantom(scans, name, seed=seed)
        (scans / f"label_{name}.nii.gz").unlink()
    for _ in range(2):
        code, err = run(capsys, "segment", "-q", str(scans), "-o", str(scans), "--model", str(tiny_model))
        assert code == 0, err
    assert sorted(p.name for p in scans.iterdir()) == [".liverunet-batch",
        "image_a.nii.gz", "image_a_liver.nii.gz", "image_b.nii.gz", "image_b_liver.nii.gz", "report.csv", "report.json"]


def test_dicom_folder_with_several_series_says_which_was_read(tiny_model, tmp_path, capsys):
    from test_image_io import write_dicom_series

    rng = np.random.default_rng(3)
    study = tmp_path / "study"
    write_dicom_series(study, rng.integers(0, 1000, (6, 8, 9)), uid="1.2.3.4.100")
    write_dicom_series(tmp_path / "other", rng.integers(0, 1000, (3, 8, 9)), uid="1.2.3.4.200")
    for f in (tmp_path / "other").iterdir():
        f.rename(study / f"other_{f.name}")
    _code, err = run(capsys, "segment", "-q", str(study), "-o", str(tmp_path / "liver.nii.gz"),
                     "--model", str(tiny_model))
    assert "liverunet: warning: study: the folder holds 2 DICOM series; the largest was read (6 files, " \
           "series UID 1.2.3.4.100)" in err


def test_nifti_without_orientation_is_segmented_with_a_warning(tiny_model, tmp_path, capsys):
    import struct

    image, _label = write_phantom(tmp_path, "n")
    plain = tmp_path / "no_orientation.nii"
    write_image(read_image(image), plain)
    header = bytearray(plain.read_bytes())
    struct.pack_into("<2h", header, 252, 0, 0)  # qform_code, sform_code
    plain.write_bytes(bytes(header))
    code, err = run(capsys, "segment", "-q", str(plain), "-o", str(tmp_path / "liver.nii.gz"), "--model", str(tiny_model))
    assert code == 0, err
    assert "liverunet: warning: no_orientation.nii: the NIfTI header gives no orientation (qform and sform codes 0)" in err
