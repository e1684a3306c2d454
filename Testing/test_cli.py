"""The ``liverunet`` command end to end on tiny phantoms (in-process, CPU, tiny model)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from cli_phantoms import TINY_SETTINGS, phantom, write_phantom
from LiverUNetLib import cli
from LiverUNetLib.cli import ProgressBar, case_key, main
from LiverUNetLib.cli import info as cli_info
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.image_io import read_image, write_image
from LiverUNetLib.postprocessing import smooth_across_slices
from LiverUNetLib.progress import ProgressEvent, Stage
from LiverUNetLib.segmentation_file import LIVER_TERMINOLOGY, read_segmentation

CLI_SETTINGS = json.dumps({k: v for k, v in TINY_SETTINGS.items() if k != "epochs"})


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["--quiet", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert lines[0].startswith("liverunet: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two phantom cases and a tiny model trained on them through the CLI (every-k sparse labels)."""
    folder = tmp_path_factory.mktemp("cli")
    data = folder / "data"
    pairs = [write_phantom(data, f"{n:02d}", seed=n) for n in range(2)]
    model = folder / "model.pt"
    code = main(
        [
            "--quiet", "train",
            "--images", *[str(p[0]) for p in pairs],
            "--labels", *[str(p[1]) for p in pairs],
            "--output", str(model), "--label-value", "1", "--every-k", "2",
            "--epochs", "1", "--settings", CLI_SETTINGS,
        ]
    )
    assert code == 0
    return {"folder": folder, "data": data, "pairs": pairs, "model": model}


def test_train_writes_a_model_with_sparse_provenance(trained, capsys):
    assert trained["model"].is_file()
    code, out, _ = run(capsys, "info", str(trained["model"]))
    assert code == 0
    assert "U-Net" in out and "slices painted" in out  # provenance: painted/total slices per case


@pytest.mark.parametrize("flag, expected", [([], True), (["--unpainted-slices-unknown"], False)])
def test_train_takes_slices_beyond_the_painting_as_liver_free_unless_told(trained, tmp_path, monkeypatch, flag, expected):
    from LiverUNetLib import training

    seen = []
    monkeypatch.setattr(training, "train", lambda cases, config, *args, **kwargs: seen.append(config) or
                        training.TrainResult(tmp_path / "m.pt", None, [1]))
    pairs = trained["pairs"]
    code = main(["--quiet", "train", "--images", str(pairs[0][0]), "--labels", str(pairs[0][1]),
                 "--output", str(tmp_path / "m.pt"), "--label-value", "1", "--every-k", "2", *flag])
    assert code == 0 and len(seen) == 1
    assert seen[0].liver_free_beyond_painting is expected


def test_train_networks_per_fold(trained, tmp_path, capsys):
    pairs = trained["pairs"]
    model = tmp_path / "two.pt"
    code = main(["--quiet", "train", "--images", *[str(p[0]) for p in pairs], "--labels", *[str(p[1]) for p in pairs],
                 "--output", str(model), "--label-value", "1", "--every-k", "2", "--epochs", "1",
                 "--networks", "2", "--settings", CLI_SETTINGS])
    assert code == 0
    code, out, _ = run(capsys, "info", str(model))
    assert code == 0 and "2 network(s)" in out and "2 networks per fold" in out
    code, _, err = run(capsys, "train", "--images", str(pairs[0][0]), "--labels", str(pairs[0][1]),
                       "--output", str(tmp_path / "x.pt"), "--networks", "0")
    assert code != 0 and "--networks" in err


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd", ".seg.nrrd"])
def test_segment_single_file_by_ending(trained, tmp_path, capsys, ending):
    image_path = trained["pairs"][0][0]
    target = tmp_path / f"liver{ending}"
    code, out, err = run(capsys, "segment", str(image_path), "--output", str(target),
                         "--model", str(trained["model"]), "--device", "cpu")
    assert code == 0, err
    assert str(target) in out
    image = read_image(image_path)
    if ending == ".seg.nrrd":
        mask, segments = read_segmentation(target)
        assert [s.name for s in segments] == ["Liver"]
        assert segments[0].terminology == LIVER_TERMINOLOGY
    else:
        mask = read_image(target)
    assert mask.array.shape == image.array.shape
    assert mask.array.dtype == np.uint8 and set(np.unique(mask.array)) <= {0, 1}
    np.testing.assert_allclose(mask.ijk_to_ras, image.ijk_to_ras, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_segment_folder_needs_output_folder(trained, tmp_path, capsys):
    code, _, err = run(capsys, "segment", str(trained["pairs"][0][0]), str(trained["pairs"][1][0]),
                       "--output", str(tmp_path / "x.nii.gz"), "--model", str(trained["model"]))
    assert code == 2
    assert "folder" in error_line(err)

    images = tmp_path / "images"
    images.mkdir()
    for image_path, _ in trained["pairs"]:
        (images / image_path.name).write_bytes(image_path.read_bytes())
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "segment", str(images), "--output", str(out_dir),
                         "--model", str(trained["model"]), "--probability", "--format", ".seg.nrrd")
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == [
        ".liverunet-batch", "image_00_liver.seg.nrrd", "image_00_liver_probability.nrrd",
        "image_01_liver.seg.nrrd", "image_01_liver_probability.nrrd", "report.csv", "report.json",
    ]
    probability = read_image(out_dir / "image_00_liver_probability.nrrd")
    assert probability.array.dtype.kind == "f"
    assert 0.0 <= probability.array.min() and probability.array.max() <= 1.0


def test_segment_smooths_across_slices_unless_told_not_to(trained, tmp_path, capsys):
    image_path = trained["pairs"][0][0]
    maps = {}
    for name, flags in (("smoothed", ()), ("raw", ("--no-slice-smoothing",))):
        out = tmp_path / f"{name}.nrrd"
        code, _, err = run(capsys, "segment", str(image_path), "--output", str(out), "--model", str(trained["model"]),
                           "--probability", *flags)
        assert code == 0, err
        maps[name] = read_image(tmp_path / f"{name}_probability.nrrd")
    axis = maps["raw"].slice_axis()
    expected = smooth_across_slices(maps["raw"].array.astype(np.float32), axis)
    np.testing.assert_allclose(maps["smoothed"].array, expected, atol=1e-6)
    assert not np.array_equal(maps["smoothed"].array, maps["raw"].array)


def test_segment_without_a_shipped_model_of_the_images_modality_says_so(tmp_path, capsys, monkeypatch):
    from LiverUNetLib import shipped_models

    monkeypatch.setattr(shipped_models, "MODELS_FOLDER", tmp_path / "no models here")
    image, _ = write_phantom(tmp_path, "a")
    code, _, err = run(capsys, "segment", str(image), "--output", str(tmp_path / "o.nii.gz"))
    assert code == 2
    line = error_line(err)
    assert "ships no MRI liver model" in line and "--model" in line and "liverunet train" in line


def test_segment_bad_inputs_are_one_line_errors(trained, tmp_path, capsys):
    model = str(trained["model"])
    cases = {
        "missing": tmp_path / "none.nii.gz",
    }
    nan_volume, _ = phantom()
    nan_volume = nan_volume.with_array(nan_volume.array.astype(np.float32))
    nan_volume.array[2, 3, 4] = np.nan
    write_image(nan_volume, tmp_path / "nan.nrrd")
    cases["NaN"] = tmp_path / "nan.nrrd"
    (tmp_path / "corrupt.nii.gz").write_bytes(b"garbage" * 50)
    cases["corrupt"] = tmp_path / "corrupt.nii.gz"
    for expected, path in cases.items():
        code, _, err = run(capsys, "segment", str(path), "--output", str(tmp_path / "o.nii.gz"), "--model", model)
        assert code == 2
        assert expected.lower() in error_line(err).lower() or "not found" in err
    assert not (tmp_path / "o.nii.gz").exists()
    code, _, err = run(capsys, "segment", str(trained["pairs"][0][0]), "--output", str(tmp_path / "o.png"), "--model", model)
    assert code == 2 and ".seg.nrrd" in error_line(err)


def test_corrupt_model_file(trained, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    code, _, err = run(capsys, "info", str(bad))
    assert code == 2
    assert "bad.pt" in error_line(err)
    code, _, err = run(capsys, "segment", str(trained["pairs"][0][0]), "-o", str(tmp_path / "o.nii.gz"), "--model", str(bad))
    assert code == 2 and not (tmp_path / "o.nii.gz").exists()


def test_train_label_on_another_grid(tmp_path, capsys):
    image, label = phantom()
    write_image(image, tmp_path / "image.nii.gz")
    moved = label.with_array(label.array)
    moved.ijk_to_ras[0, 3] += 0.7  # not a whole voxel: a different grid
    write_image(moved, tmp_path / "label.nii.gz")
    code, _, err = run(capsys, "train", "--images", str(tmp_path / "image.nii.gz"), "--labels",
                       str(tmp_path / "label.nii.gz"), "-o", str(tmp_path / "m.pt"), "--epochs", "1")
    assert code == 2
    assert "grid" in error_line(err)
    assert not (tmp_path / "m.pt").exists()


def test_train_mismatched_counts_and_empty_label(tmp_path, capsys):
    image, label = write_phantom(tmp_path, "a")
    code, _, err = run(capsys, "train", "--images", str(image), str(image), "--labels", str(label),
                       "-o", str(tmp_path / "m.pt"))
    assert code == 2 and "2 images but 1 labels" in error_line(err)
    empty = read_image(label)
    write_image(empty.with_array(np.zeros_like(empty.array)), tmp_path / "empty.nii.gz")
    code, _, err = run(capsys, "train", "--images", str(image), "--labels", str(tmp_path / "empty.nii.gz"),
                       "-o", str(tmp_path / "m.pt"))
    assert code == 2 and "no liver" in error_line(err).lower()


def test_evaluate_files_json(tmp_path, capsys):
    _, label = write_phantom(tmp_path, "a")
    code, out, err = run(capsys, "evaluate", "--reference", str(label), "--prediction", str(label), "--json")
    assert code == 0, err
    data = json.loads(out)
    for key in ("dice", "iou", "hd95_mm", "assd_mm", "ravd_percent", "mssd_mm", "volume_ml"):
        assert key in data
    assert data["dice"] == 1.0 and data["assd_mm"] == 0.0


def test_evaluate_folders_rows_and_mean(tmp_path, capsys):
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    for n in range(2):
        _, label = write_phantom(refs, f"{n:02d}", seed=n)
        mask = read_image(label)
        if n == 1:
            mask = mask.with_array(np.roll(mask.array, 1, axis=2))
        preds.mkdir(exist_ok=True)
        write_image(mask, preds / f"image_{n:02d}_liver.nii.gz")
    (refs / "image_00.nii.gz").unlink()
    (refs / "image_01.nii.gz").unlink()
    code, out, err = run(capsys, "evaluate", "--reference", str(refs), "--prediction", str(preds), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [c["case"] for c in data["cases"]] == ["label_00", "label_01"]
    assert data["cases"][0]["dice"] == 1.0 and data["cases"][1]["dice"] < 1.0
    assert data["mean"]["dice"] == pytest.approx((1.0 + data["cases"][1]["dice"]) / 2)
    code, out, _ = run(capsys, "evaluate", "--reference", str(refs), "--prediction", str(preds))
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["case", "dice", "iou"]
    assert out.splitlines()[-1].startswith("mean")


def test_evaluate_infinite_distance_is_null_in_json(tmp_path, capsys):
    _, label = write_phantom(tmp_path, "a")
    mask = read_image(label)
    write_image(mask.with_array(np.zeros_like(mask.array)), tmp_path / "empty.nii.gz")
    code, out, _ = run(capsys, "evaluate", "--reference", str(label), "--prediction", str(tmp_path / "empty.nii.gz"), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["dice"] == 0.0 and data["assd_mm"] is None


@pytest.mark.data
def test_evaluate_golden_example(ct_sample_dir, capsys):
    code, out, err = run(capsys, "evaluate", "--reference", str(ct_sample_dir / "liver_gt.nii.gz"),
                         "--prediction", str(ct_sample_dir / "example_segmentation.nii.gz"), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert round(data["dice"], 3) == 0.978
    assert data["mssd_mm"] == pytest.approx(14.0, rel=0.05)


def test_usage_error_is_one_line(capsys):
    code = main(["segment"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--output" in error_line(err)


def test_unexpected_error_hints_debug(monkeypatch, tmp_path, capsys):
    def boom(_args, _bar):
        raise RuntimeError("something broke\nacross lines")

    monkeypatch.setattr(cli_info, "run", boom)
    code, _, err = run(capsys, "info", str(tmp_path / "m.pt"))
    assert code == 1
    line = error_line(err)
    assert "RuntimeError" in line and "--debug" in line
    code = main(["--debug", "info", str(tmp_path / "m.pt")])
    assert code == 1
    assert "Traceback" in capsys.readouterr().err


def test_keyboard_interrupt_exit_code(monkeypatch, tmp_path, capsys):
    def interrupted(_args, _bar):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_info, "run", interrupted)
    code, _, err = run(capsys, "info", str(tmp_path / "m.pt"))
    assert code == 130
    assert "interrupted" in error_line(err)


def test_progress_bar_text_for_logs():
    stream = io.StringIO()
    bar = ProgressBar(stream)
    for i in range(101):
        bar(ProgressEvent(Stage.INFERENCE, i / 100, f"{i}/100 slices"))
    bar(ProgressEvent(Stage.TRAINING, 0.5, epoch=3, epochs=6, loss=0.25, validation_dice=0.9, eta_seconds=75))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 12  # one per tenth of the inference, plus the epoch line
    assert "epoch 3/6" in lines[-1] and "val Dice 0.900" in lines[-1] and "ETA 1:15" in lines[-1]
    assert "[##############..............]  50%" in lines[-1]


def test_case_key_matching():
    from pathlib import Path

    assert case_key(Path("image_21.nii.gz")) == case_key(Path("label_21.nii.gz")) == "21"
    assert case_key(Path("Patient-07_liver_pred.seg.nrrd")) == "patient_07"
    with pytest.raises(LiverUNetError, match="No matching"):
        cli.match_cases([Path("a_1.nii.gz")], [Path("b_2.nii.gz")], ("reference", "prediction"))


@pytest.mark.data
def test_segment_dicom_folder_to_seg_nrrd_on_the_reference_grid(trained, ct_sample_dir, tmp_path, capsys):
    """A DICOM folder in, a .seg.nrrd out, on exactly the grid of the reference mask. The tiny
    phantom model is an MRI model, so CT input is refused unless explicitly allowed."""
    target = tmp_path / "ct_liver.seg.nrrd"
    args = ["segment", str(ct_sample_dir / "dicom"), "--output", str(target), "--model", str(trained["model"])]
    code, _, err = run(capsys, *args)
    assert code == 2 and "CT" in error_line(err) and "--allow-modality-mismatch" in err
    assert not target.exists()
    code, out, err = run(capsys, *args, "--allow-modality-mismatch")
    assert code == 0, err
    mask, segments = read_segmentation(target)
    reference = read_image(ct_sample_dir / "liver_gt.nii.gz")
    assert mask.array.shape == reference.array.shape
    np.testing.assert_allclose(mask.ijk_to_ras, reference.ijk_to_ras, atol=1e-6)
    assert segments[0].name == "Liver"


def test_segment_prints_each_cases_estimated_dice(trained, tmp_path, capsys):
    """One image and a folder: each written mask is followed by its quality estimate's one-line summary."""
    image = trained["pairs"][0][0]
    code, out, err = run(capsys, "segment", str(image), "--output", str(tmp_path / "one.nii.gz"),
                         "--model", str(trained["model"]))
    assert code == 0, err
    assert re.search(r": estimated Dice \d\.\d\d \(\d\.\d\d-\d\.\d\d\)", out)
    code, out, err = run(capsys, "segment", *[str(p[0]) for p in trained["pairs"]], "--output",
                         str(tmp_path / "folder"), "--model", str(trained["model"]))
    assert code == 0, err
    assert len(re.findall(r": estimated Dice \d\.\d\d", out)) == len(trained["pairs"])
