"""bench/speed.py runs end to end on a tiny 2.5D ensemble: ours, MONAI's pipeline, the model alone, peak RAM and
the report, so the benchmark of the shipped models cannot silently break (no timing is asserted)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_phantoms import TINY_SETTINGS, phantom
from engine_helpers import box_volume, dice, pointwise_model, pointwise_network
from LiverUNetLib.image_io import read_image, write_image
from LiverUNetLib.labels import sparse_label_from_mask
from LiverUNetLib.model_file import LiverModel, load_model, save_model
from LiverUNetLib.preprocessing import Modality
from LiverUNetLib.volume import Volume

speed = pytest.importorskip("bench.speed")
speed_monai = pytest.importorskip("bench.speed_monai")
speed_report = pytest.importorskip("bench.speed_report")
speed_cases = pytest.importorskip("bench.speed_cases")
speed_fill = pytest.importorskip("bench.speed_fill")
ours_segment_file = pytest.importorskip("bench.speed_measure").ours_segment_file


def _require_monai() -> None:
    pytest.importorskip("monai", reason="MONAI is a benchmark-only dependency (pip install -e '.[bench]')")
    pytest.importorskip("skimage", reason="MONAI's KeepLargestConnectedComponentd needs scikit-image ('.[bench]')")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A 2.5D ensemble of two networks (context 1, two networks in one fold) trained on MRI-like phantoms, the
    same networks as a CT model, and an MRI and a CT phantom with their labels."""
    from LiverUNetLib.training import TrainConfig, TrainingCase, train

    folder = tmp_path_factory.mktemp("speed")
    cases = []
    for seed in (0, 1):
        image, label = phantom(seed)
        cases.append(TrainingCase(f"p{seed}", image, sparse_label_from_mask(image, label)))
    config = TrainConfig(**{**TINY_SETTINGS, "context_slices": 1, "networks_per_fold": 2})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads spin against each other on a shared 2-core machine (engine_helpers)
    try:
        mri_model = train(cases, config, folder / "tiny_mri.pt", resume=False).model_path
    finally:
        torch.set_num_threads(threads)
    model = load_model(mri_model)
    ct = LiverModel(model.networks, model.network_config,
                    dataclasses.replace(model.preprocess, modality=Modality.CT), model.card, model.threshold)
    image, label = phantom(2)
    paths = {"mri_model": Path(mri_model), "ct_model": save_model(ct, folder / "tiny_ct.pt"),
             "mri": folder / "mri.nii.gz", "mri_label": folder / "mri_label.nii.gz",
             "ct": folder / "ct.nii.gz", "ct_label": folder / "ct_label.nii.gz"}
    write_image(image, paths["mri"])
    write_image(label, paths["mri_label"])
    # Hounsfield-like: the background below -500 (air), the bright ellipsoid near soft tissue
    write_image(image.with_array((image.array.astype(np.int16) - 1100)), paths["ct"])
    write_image(label, paths["ct_label"])
    return paths


def test_the_benchmark_runs_ours_and_monai_on_a_25d_ensemble(tiny, tmp_path, capsys):
    _require_monai()
    out = tmp_path / "speed.json"
    argv = ["--mri", str(tiny["mri"]), "--mri-label", str(tiny["mri_label"]), "--mri-model", str(tiny["mri_model"]),
            "--ct", str(tiny["ct"]), "--ct-label", str(tiny["ct_label"]), "--ct-model", str(tiny["ct_model"]),
            "--repeats", "1", "--threads", "1", "--batch-size", "4", "--skip-training", "--skip-memory",
            "--json", str(out)]
    assert speed.main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("end-to-end speed-up vs MONAI: ") and float(printed[-1].split(": ")[1]) > 0

    report = json.loads(out.read_text())
    for name in ("mri", "ct"):
        entry = report["end_to_end"][name]
        assert entry["ours"]["total"] > 0 and entry["monai"]["total"] > 0 and len(entry["ours"]["runs"]) == 1
        assert 0.0 <= entry["mask_dice_ours_vs_monai"] <= 1.0
        assert set(entry["reference_dice"]) == {"ours", "monai"}
        only = report["model_only"][name]
        assert only["networks"] == 2 and only["network_input"][0] == 3  # the 2.5D stack of 3 slices
        assert only["fp32"]["compute_bound_s"] > 0 and only["fp32"]["times_bound"] > 0
    assert report["models"]["mri"]["networks"] == 2 and report["models"]["mri"]["in_channels"] == 3
    assert any(line.startswith("| end to end, ct 44x40x8 ") for line in printed)


def test_peak_ram_of_fresh_processes_on_the_long_ct(tiny, tmp_path):
    """The 200-slice CT made from the CT phantom, segmented by `liverunet segment` and by MONAI in new processes."""
    _require_monai()
    args = speed.build_parser().parse_args(["--threads", "1"])
    cases = speed_cases.build_cases(None, None, tiny["ct"], tiny["ct_model"], tmp_path)
    long_ct = [c for c in cases if not c.timed]
    assert [c.name for c in long_ct] == ["ct_44x40x200"]
    memory = speed.memory_section(long_ct, args, with_monai=True, log=lambda line: None)
    assert memory["ct_44x40x200"]["ours"]["peak_mb"] > 100  # torch alone takes more
    assert memory["ct_44x40x200"]["monai"]["peak_mb"] > 100


def test_the_fill_is_timed_as_the_effects_job_on_a_painted_scan(tiny, tmp_path):
    """The worker's fill job on a phantom painted on every 2nd liver slice, from the tiny ensemble (the benchmark
    starts from the shipped model)."""
    case = speed_fill.FillCase("mri", tiny["mri"], tiny["mri_label"], 1, every_k=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = speed_fill.time_fills([case], 1, tmp_path, log=lambda line: None,
                                        start_model=str(tiny["mri_model"]), settings=dict(TINY_SETTINGS))
    finally:
        torch.set_num_threads(threads)
    fill = results["mri"]
    liver_slices = np.flatnonzero(read_image(tiny["mri_label"]).array.any(axis=(1, 2)))
    assert fill["painted_slices"] == liver_slices[1::2].tolist()
    assert fill["seconds"] > 0 and len(fill["runs"]) == 1 and 0.0 <= fill["dice_unpainted"] <= 1.0
    row = speed_report.format_table({"fill": results})[-1]
    assert row.startswith(f"| Fill from painted slices, mri 44x40x8, 1 in 2 liver slices painted "
                          f"({len(liver_slices[1::2])} slices)")


def test_train_is_timed_as_the_panels_job_from_the_shipped_model(mri_image_path):
    """``speed.py --train``: the worker's train job on three CHAOS subjects painted every 5th liver slice, from the
    shipped MRI model (one short epoch here; the benchmark runs the panel's schedule)."""
    mri_image_path("20")  # skips, or fails under LIVERUNET_REQUIRE_DATA=1, without the data
    train_time = pytest.importorskip("bench.train_time")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record = train_time.time_train("mri", ["20", "37", "38"], 5, {"epochs": 1, "samples_per_epoch": 8})
    finally:
        torch.set_num_threads(threads)
    assert record["epochs"] == 1 and record["epochs_run"] == [1] and record["seconds"] > 0
    assert record["settings"]["liver_free_beyond_painting"] is True and record["settings"]["folds"] == 1
    for subject, painted in record["annotated_slices"].items():
        image, liver = train_time.load_scan("mri", subject)
        assert painted == len(np.flatnonzero(liver.array.any(axis=(1, 2)))[2::5])  # every 5th, from the 3rd
    row = speed_report.format_table({"train": {"mri": record}})[-1]
    assert row.startswith("| Train from three painted scans (mri, ") and "1 epochs" in row


@pytest.mark.parametrize("directions", [np.eye(3), np.diag([-1.0, -1.0, 1.0])], ids=["ras", "lps"])
def test_monai_feeds_the_networks_what_ours_does(tmp_path, directions):
    """Hand-set networks whose liver is the superior neighbour's bright box: a transposed, flipped or reversed
    stack in the MONAI pipeline moves its mask away from ours."""
    _require_monai()
    volume, box = box_volume()
    matrix = volume.ijk_to_ras.copy()
    matrix[:3, :3] = directions @ matrix[:3, :3]
    source = tmp_path / "box.nii.gz"
    write_image(Volume(volume.array, matrix), source)
    model = pointwise_model(context_slices=1, networks=[pointwise_network(3, source_channel=2) for _ in range(2)])

    ours = ours_segment_file(source, tmp_path / "ours.nii.gz", model)
    run = speed_monai.MonaiEnsemblePipeline(model, batch_size=4, device="cpu").run(source, tmp_path / "monai")
    assert ours["total"] > 0 and run.total > 0
    ours_mask = read_image(tmp_path / "ours.nii.gz").array
    monai_mask = read_image(run.output).array
    shifted = np.roll(box, -1, axis=0)  # each slice shows its superior neighbour's box
    assert dice(ours_mask, shifted) > 0.95
    assert dice(monai_mask, ours_mask) > 0.95


def test_neighbours_are_stacked_as_channels_repeated_at_the_ends():
    volume = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 2, 3, 4)  # (1, H, W, S), slice s holds s
    stack = speed_monai.stack_neighbours(volume, 1)
    assert stack.shape == (4, 3, 2, 3)
    assert stack[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]


def test_a_model_of_one_modality_runs_only_its_images(tiny):
    args = speed.build_parser().parse_args(["--model", str(tiny["ct_model"]), "--ct", str(tiny["ct"]),
                                            "--mri", str(tiny["mri"]), "--skip-large-ct"])
    cases = speed.choose_cases(args, Path("unused"))
    assert [(c.name, c.model_path, c.shipped) for c in cases] == [("ct", tiny["ct_model"], False)]


def test_the_large_ct_mirrors_the_scan_along_z(tmp_path):
    source = tmp_path / "ct.nii.gz"
    array = np.arange(3, dtype=np.int16)[:, None, None] * np.ones((3, 8, 6), np.int16) - 1000
    write_image(Volume(array, np.eye(4)), source)
    name, big = speed_cases.synthesise_large_ct(source, tmp_path, slices=7)
    assert name == "ct_6x8x7"
    assert read_image(big).array[:, 0, 0].tolist() == [-1000, -999, -998, -998, -999, -1000, -1000]


def test_the_docs_block_is_replaced_and_the_notes_kept(tmp_path):
    report = {
        "command": "python bench/speed.py --repeats 1",
        "machine": {"cpu": "cpu", "cpu_count": 2, "torch_threads": 2, "memory_gib": 4.0, "avx512_bf16": True,
                    "amx_bf16": False, "gpu": None, "python": "3.11", "torch": "2", "monai": "1.6.1"},
        "models": {"mri": {"path": "m.pt", "networks": 5, "base_channels": 16, "in_plane_spacing_mm": 2.5,
                           "in_channels": 3}},
        "repeats": "1 timed run",
        "end_to_end": {"mri": {"label": "mri 256x256x36",
                               "ours": {"total": 1.0, "read": 0.1, "segment": 0.8, "write": 0.1, "runs": [1.0]},
                               "monai": {"total": 2.5, "preprocess": 0.3, "infer": 2.0, "postprocess": 0.1,
                                         "write": 0.1, "runs": [2.5]},
                               "speedup_vs_monai": 2.5, "mask_dice_ours_vs_monai": 0.99,
                               "reference_dice": {"ours": 0.95, "monai": 0.94}}},
        "peak_ram_mb": {"mri": {"ours": {"peak_mb": 500.0}, "monai": {"peak_mb": 1000.0}}},
        "finished": "now",
    }
    markdown, raw = tmp_path / "benchmarks.md", tmp_path / "benchmarks.json"
    markdown.write_text("# Benchmarks\n\nhand-written notes\n")
    raw.write_text(json.dumps({"other": 1}))
    speed_report.write_docs(report, markdown, raw)
    speed_report.write_docs(report, markdown, raw)  # the block is replaced, not added again
    text = markdown.read_text()
    assert text.count(speed_report.DOC_START) == 1 and "hand-written notes" in text
    assert "| end to end, mri 256x256x36 (s, median; runs 1.00-1.00) | **1.00** | 2.50 | **2.50** |" in text
    assert "| peak RAM, mri (MiB, VmHWM of a fresh process) | 500 | 1000 | 2.00 |" in text
    stored = json.loads(raw.read_text())
    assert stored["other"] == 1 and stored["latest"]["end_to_end"]["mri"]["speedup_vs_monai"] == 2.5
    assert speed_report.speedup_line(report) == "end-to-end speed-up vs MONAI: 2.50"
