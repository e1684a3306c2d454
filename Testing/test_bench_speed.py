"""bench/speed.py works: its pieces run on a tiny synthetic volume and a tiny model (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from LiverUNetLib.image_io import read_image, write_image
from LiverUNetLib.model_file import LiverModel, save_model
from LiverUNetLib.networks import NetworkConfig
from LiverUNetLib.preprocessing import Modality, PreprocessConfig
from LiverUNetLib.volume import Volume

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("bench_speed", REPO_ROOT / "bench" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_speed"] = module
    spec.loader.exec_module(module)
    return module


def _phantom(tmp_path: Path) -> Path:
    """A 6-slice 40x48 'abdomen' (bright ellipse in a dark background) with LAS-like axes."""
    k, j, i = np.mgrid[0:6, 0:40, 0:48]
    body = ((j - 20) / 16.0) ** 2 + ((i - 24) / 20.0) ** 2 < 1
    organ = ((j - 18) / 7.0) ** 2 + ((i - 17) / 8.0) ** 2 < 1
    array = (body * 300 + organ * 400 + np.random.default_rng(0).normal(0, 10, body.shape)).astype(np.int16)
    affine = np.diag([-2.5, 2.5, 6.0, 1.0])
    path = tmp_path / "phantom.nii.gz"
    write_image(Volume(array, affine), path)
    return path


def _tiny_model(tmp_path: Path) -> tuple[LiverModel, Path]:
    torch.manual_seed(0)
    model = LiverModel.create(NetworkConfig(base_channels=4, depth=2), PreprocessConfig(in_plane_spacing_mm=2.5))
    model.eval()
    path = save_model(model, tmp_path / "tiny.pt")
    return model, path


def test_ours_end_to_end_and_model_only(tmp_path, speed):
    source = _phantom(tmp_path)
    model, _ = _tiny_model(tmp_path)
    stages = speed.ours_segment_file(source, tmp_path / "out.nii.gz", model)
    assert set(stages) >= {"total", "read", "segment", "write"}
    mask = read_image(tmp_path / "out.nii.gz")
    assert mask.array.shape == (6, 40, 48)

    volume = read_image(source)
    batch = speed.network_batch(volume, model)
    assert batch.shape[0] == 6 and batch.shape[-1] % model.network_config.size_multiple == 0
    assert speed.flops_per_volume(model, batch) > 0
    networks = speed.inference_networks(model, torch.device("cpu"))
    assert speed.model_forward_seconds(networks, batch, 4, None, torch.device("cpu")) > 0
    assert speed.measured_peak_flops(torch.float32, size=64, repeats=1) > 0


def test_peak_ram_subprocess(tmp_path, speed):
    source = _phantom(tmp_path)
    _, model_path = _tiny_model(tmp_path)
    result = speed.peak_ram("ours", source, model_path, None, threads=1, timeout=300)
    assert result["peak_mb"] >= result["baseline_mb"] > 0


def test_monai_pipeline_same_network(tmp_path, speed):
    pytest.importorskip("monai", reason="MONAI is a benchmark-only dependency (pip install -e '.[bench]')")
    pytest.importorskip("skimage", reason="MONAI's KeepLargestConnectedComponent needs scikit-image ('.[bench]')")
    source = _phantom(tmp_path)
    model, _ = _tiny_model(tmp_path)
    out = speed.MonaiPipeline(model, batch_size=4).run(source, tmp_path / "monai")
    written = read_image(out["output"])
    original = read_image(source)
    assert written.array.shape == original.array.shape
    assert np.allclose(written.ijk_to_ras, original.ijk_to_ras, atol=1e-4)


def test_monai_wrapper_maps_ras_back_to_native_order(speed):
    """The wrapper shows the networks slices in the file's own row/column order."""
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros_like(x[:, :1])

    model = LiverModel.create(NetworkConfig(base_channels=4, depth=2), PreprocessConfig())
    wrapper = speed.MonaiNetwork(model)
    wrapper.nets = torch.nn.ModuleList([Probe()])
    native = torch.arange(12.0).view(1, 1, 3, 4)  # rows J, columns I
    # I runs toward L (-R), J toward A: RAS X = flipped I, Y = J
    wrapper.set_native_axes(np.diag([-1.0, 1.0, 1.0, 1.0]))
    ras = torch.flip(native, (-1,)).transpose(-1, -2)[..., None]  # (B, 1, X, Y, 1)
    out = wrapper(ras)
    assert torch.equal(seen[0], native)
    assert out.shape == ras.shape


def test_training_throughput_and_report(tmp_path, speed):
    from LiverUNetLib.labels import sparse_label_from_mask
    from LiverUNetLib.training import TrainingCase

    source = _phantom(tmp_path)
    image = read_image(source)
    label = image.with_array((image.array > 500).astype(np.uint8))
    case = TrainingCase("p", image, sparse_label_from_mask(image, label, label_value=1, dense=True))
    settings = {"base_channels": 4, "depth": 2, "crop_size": 16, "batch_size": 2, "device": "cpu"}
    result = speed.training_throughput([case], settings, epochs=2, samples=4)
    assert result["slices_per_s"] > 0

    report = {
        "command": "python bench/speed.py --model tiny.pt",
        "machine": speed.machine_description(),
        "model": {"path": "tiny.pt", "base_channels": 4, "in_plane_spacing_mm": 2.5, "folds": 1},
        "repeats": speed.repeats_note(1),
        "end_to_end": {"mri": {"ours": {"total": 1.0}, "monai": {"total": 2.0}, "speedup_vs_monai": 2.0,
                               "mask_dice_ours_vs_monai": 1.0}},
        "training": result,
        "finished": "now",
    }
    markdown, raw = tmp_path / "benchmarks.md", tmp_path / "benchmarks.json"
    markdown.write_text("# Benchmarks\n\nhand-written notes\n")
    speed.write_docs(report, markdown, raw)
    speed.write_docs(report, markdown, raw)  # idempotent: the block is replaced, notes kept
    text = markdown.read_text()
    assert text.count(speed.DOC_START) == 1 and "hand-written notes" in text
    assert json.loads(raw.read_text())["latest"]["end_to_end"]["mri"]["speedup_vs_monai"] == 2.0


def test_synthetic_large_ct(tmp_path, speed):
    source = tmp_path / "ct.nii.gz"
    write_image(Volume(np.full((3, 8, 8), -1000, np.int16), np.eye(4)), source)
    big = speed.synthesise_large_ct(source, tmp_path / "big.nii.gz", slices=7)
    assert read_image(big).array.shape == (7, 8, 8)
    assert speed.with_modality(_tiny_model(tmp_path)[0], Modality.CT).preprocess.modality is Modality.CT
