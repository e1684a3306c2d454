"""Whole-volume inference: exact input grid, tiling, batching, OOM fallback, TTA, clean-up, cancel.

Most checks use ``pointwise_model`` (a hand-set U-Net whose output is a known per-pixel function of
one input channel), so the expected mask is known exactly; the rest use a tiny trained model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_helpers import ORIENTATIONS, box_volume, dice, load_trained_phantom_model, pointwise_model, pointwise_network
from engine_helpers import one_thread  # noqa: F401 - autouse fixture
from cli_phantoms import phantom
from LiverUNetLib import inference
from LiverUNetLib.devices import is_out_of_memory, resolve_device
from LiverUNetLib.errors import CancelledError, LiverUNetError
from LiverUNetLib.inference import InferenceConfig, segment_volume
from LiverUNetLib.model_file import save_model
from LiverUNetLib.postprocessing import smooth_across_slices
from LiverUNetLib.progress import CancelToken, Stage
from LiverUNetLib.volume import Volume


def cpu(**kwargs) -> InferenceConfig:
    return InferenceConfig(device="cpu", **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return load_trained_phantom_model(tmp_path_factory.mktemp("inference"))


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_mask_is_exactly_on_the_input_grid(orientation):
    volume, box = box_volume(orientation)
    result = segment_volume(volume, pointwise_model(), cpu())
    mask = result.mask
    assert mask.array.shape == volume.array.shape
    assert mask.array.dtype == np.uint8
    assert set(np.unique(mask.array).tolist()) == {0, 1}
    np.testing.assert_array_equal(mask.ijk_to_ras, volume.ijk_to_ras)
    np.testing.assert_array_equal(mask.array.astype(bool), box)  # not transposed, flipped or shifted
    assert mask.metadata["segment"] == "Liver"
    assert result.device == "cpu" and result.probability is None and result.seconds >= 0


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "oblique_axial"])
@pytest.mark.parametrize("shape", [(7, 33, 45), (5, 31, 29)])
def test_resampled_model_maps_back_onto_odd_grids(orientation, shape):
    slices, rows, cols = shape
    volume, box = box_volume(orientation, slices=slices, rows=rows, cols=cols, box=((1, 5), (7, 25), (6, 22)))
    result = segment_volume(volume, pointwise_model(in_plane_spacing_mm=3.1), cpu())
    assert result.mask.array.shape == volume.array.shape
    assert result.mask.same_grid(volume)
    assert dice(result.mask.array, box) > 0.9
    # differences only within 2 native pixels (one network pixel) of the box's in-plane border
    axis = volume.slice_axis()
    wrong = np.moveaxis(result.mask.array.astype(bool) ^ box, axis, 0)
    band = np.zeros_like(wrong)
    band[1:5, 5:27, 4:24] = True
    band[1:5, 9:23, 8:20] = False
    assert not (wrong & ~band).any()


def test_trained_model_on_a_new_phantom(trained):
    image, truth = phantom(seed=11)
    result = segment_volume(image, trained, cpu())
    assert dice(result.mask.array, truth.array) > 0.8
    assert result.warnings == []


@pytest.fixture
def tiles(monkeypatch):
    """Counts overlap-tiled forward passes, so a tiling test cannot pass without tiling."""
    real = inference._Predictor._forward_tiled
    calls = []

    def spy(self, x):
        calls.append(tuple(x.shape))
        return real(self, x)

    monkeypatch.setattr(inference._Predictor, "_forward_tiled", spy)
    return calls


@pytest.mark.parametrize("max_tile, margin", [(32, 8), (30, 32), (48, 4)])
def test_overlap_tile_equals_whole_slice_for_a_pointwise_model(max_tile, margin, tiles):
    # tissue everywhere (air only in the first column): the whole slice is body
    volume, box = box_volume("axial", slices=3, rows=70, cols=90, box=((0, 3), (7, 61), (5, 83)), air_columns=1)
    whole = segment_volume(volume, pointwise_model(), cpu(return_probability=True))
    assert not tiles
    tiled = segment_volume(volume, pointwise_model(), cpu(return_probability=True, max_tile=max_tile, tile_margin=margin))
    assert tiles
    np.testing.assert_allclose(tiled.probability.array, whole.probability.array, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(tiled.mask.array, whole.mask.array)
    np.testing.assert_array_equal(tiled.mask.array.astype(bool), box)


def test_overlap_tile_on_elongated_slices(tiles):
    # a slice wider than the tile but thinner than the mirrored margin
    volume, box = box_volume("coronal", slices=3, rows=12, cols=70, box=((0, 3), (2, 9), (5, 60)), air_columns=1)
    tiled = segment_volume(volume, pointwise_model(), cpu(max_tile=32, tile_margin=8))
    assert tiles
    np.testing.assert_array_equal(tiled.mask.array.astype(bool), box)


def test_overlap_tile_matches_whole_slice_for_a_trained_model(trained, tiles):
    image, _ = phantom(seed=12, shape=(4, 90, 100))  # 45 x 50 pixels at the model's 3 mm
    whole = segment_volume(image, trained, cpu(return_probability=True))
    assert not tiles
    tiled = segment_volume(image, trained, cpu(return_probability=True, max_tile=40, tile_margin=10))
    assert tiles
    agree = np.mean(whole.mask.array == tiled.mask.array)
    assert agree > 0.995
    assert float(np.abs(whole.probability.array - tiled.probability.array).mean()) < 0.02
    assert whole.mask.array.sum() > 0


@pytest.mark.parametrize("batch_size", [1, 2, 7, 64])
def test_batch_boundaries_do_not_change_the_2_5d_result(batch_size):
    # The model reads only the previous slice (channel 0 of a 3-slice context): the expected mask is
    # the box shifted by one slice, clamped at the first slice, whatever the batch boundaries.
    volume, box = box_volume("sagittal", slices=9, box=((0, 6), (6, 20), (4, 14)))
    model = pointwise_model(context_slices=1, source_channel=0)
    result = segment_volume(volume, model, cpu(batch_size=batch_size))
    first = np.moveaxis(box, 1, 0)
    expected = first[np.clip(np.arange(9) - 1, 0, 8)]
    np.testing.assert_array_equal(np.moveaxis(result.mask.array, 1, 0).astype(bool), expected)


def test_batch_size_does_not_change_a_trained_model_s_result(trained):
    image, _ = phantom(seed=13)
    one = segment_volume(image, trained, cpu(batch_size=1, return_probability=True))
    seven = segment_volume(image, trained, cpu(batch_size=7, return_probability=True))
    np.testing.assert_allclose(one.probability.array, seven.probability.array, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(one.mask.array, seven.mask.array)


def oom() -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_halves_the_batch_and_still_gives_the_right_mask(monkeypatch):
    volume, box = box_volume("axial", slices=9)
    real = inference._Predictor._forward
    sizes = []

    def flaky(self, x):
        sizes.append(x.shape[0])
        if len(sizes) <= 2:
            raise oom()
        return real(self, x)

    monkeypatch.setattr(inference._Predictor, "_forward", flaky)
    result = segment_volume(volume, pointwise_model(), cpu(batch_size=8))
    assert sizes[:3] == [8, 4, 2]
    assert max(sizes[2:]) == 2 and sum(sizes[2:]) == 9  # every slice done once, in halved batches
    np.testing.assert_array_equal(result.mask.array.astype(bool), box)
    assert result.device == "cpu"
    assert not [w for w in result.warnings if "memory" in w]


class FakeGPU(str):
    """A device that torch treats as the CPU but inference sees as a GPU (``type`` 'mps')."""

    type = "mps"
    index = None


def test_out_of_memory_on_a_gpu_falls_back_to_the_cpu(monkeypatch):
    volume, box = box_volume("sagittal", slices=9)
    real = inference._Predictor._forward
    failed = []

    def gpu_runs_out(self, x):
        if self.device.type != "cpu":
            failed.append(x.shape[0])
            raise oom()
        return real(self, x)

    monkeypatch.setattr(inference, "resolve_device", lambda choice: FakeGPU("cpu"))
    monkeypatch.setattr(inference._Predictor, "_forward", gpu_runs_out)
    result = segment_volume(volume, pointwise_model(), InferenceConfig(device="auto", batch_size=8, half_precision=False))
    assert failed == [8, 4, 2, 1]
    assert result.device == "cpu"
    assert any("ran out of memory" in w and "CPU" in w for w in result.warnings)
    np.testing.assert_array_equal(result.mask.array.astype(bool), box)


def test_out_of_memory_on_the_cpu_with_single_slices_is_a_clear_error(monkeypatch):
    volume, _ = box_volume("axial", slices=4)

    def always(self, x):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 GB. Out of memory")

    monkeypatch.setattr(inference._Predictor, "_forward", always)
    with pytest.raises(LiverUNetError, match="Out of memory on the CPU"):
        segment_volume(volume, pointwise_model(), cpu(batch_size=4))


def test_other_errors_are_not_mistaken_for_out_of_memory(monkeypatch):
    volume, _ = box_volume("axial", slices=4)
    calls = []

    def broken(self, x):
        calls.append(1)
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(inference._Predictor, "_forward", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        segment_volume(volume, pointwise_model(), cpu(batch_size=4))
    assert len(calls) == 1


def test_is_out_of_memory():
    assert is_out_of_memory(oom())
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20 MiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in {"cpu", "cuda", "mps"}
    with pytest.raises(LiverUNetError, match="Unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LiverUNetError, match="CUDA GPU was requested"):
            resolve_device("cuda")
        volume, _ = box_volume("axial", slices=3)
        with pytest.raises(LiverUNetError, match="CUDA"):
            segment_volume(volume, pointwise_model(), InferenceConfig(device="cuda"))


def test_tta_with_a_pointwise_model_keeps_the_box():
    volume, box = box_volume("coronal", slices=7, rows=40, cols=44, box=((1, 6), (8, 30), (5, 20)))
    result = segment_volume(volume, pointwise_model(), cpu(tta=True, return_probability=True))
    assert result.mask.array.shape == volume.array.shape
    assert dice(result.mask.array, box) > 0.95
    # TTA averages resampled passes: the border gets intermediate probabilities
    p = result.probability.array
    assert ((p > 0.05) & (p < 0.95)).any()


def test_tta_with_a_trained_model(trained):
    image, truth = phantom(seed=14)
    plain = segment_volume(image, trained, cpu(return_probability=True))
    tta = segment_volume(image, trained, cpu(tta=True, return_probability=True))
    assert not np.array_equal(plain.probability.array, tta.probability.array)
    assert dice(tta.mask.array, plain.mask.array) > 0.9
    assert dice(tta.mask.array, truth.array) > 0.8


def two_boxes():
    volume, big = box_volume("axial", slices=9, rows=30, cols=40, box=((1, 8), (4, 20), (3, 20)))
    small = np.zeros_like(big)
    small[3:5, 24:27, 30:36] = True
    array = volume.array.copy()
    array[small] = 1000.0
    return volume.with_array(array), big, small


def test_largest_component_removes_a_separate_blob():
    volume, big, small = two_boxes()
    cleaned = segment_volume(volume, pointwise_model(), cpu())
    np.testing.assert_array_equal(cleaned.mask.array.astype(bool), big)
    kept = segment_volume(volume, pointwise_model(), cpu(largest_component=False))
    np.testing.assert_array_equal(kept.mask.array.astype(bool), big | small)


def test_fill_holes_per_slice():
    volume, box = box_volume("axial", slices=5, box=((1, 4), (6, 20), (4, 14)))
    array = volume.array.copy()
    array[2, 10:13, 8:10] = 100.0  # a dark vessel inside the liver outline
    holed = volume.with_array(array)
    # a one-slice hole is also what smoothing across slices closes: here only hole filling is under test
    plain = segment_volume(holed, pointwise_model(), cpu(slice_smoothing=False))
    assert not plain.mask.array[2, 11, 9]
    filled = segment_volume(holed, pointwise_model(), cpu(fill_holes=True, slice_smoothing=False))
    np.testing.assert_array_equal(filled.mask.array.astype(bool), box)


def test_probability_map_on_request():
    volume, _, _ = two_boxes()
    result = segment_volume(volume, pointwise_model(in_plane_spacing_mm=2.0), cpu(return_probability=True, largest_component=False))
    p = result.probability
    assert p is not None and p.array.dtype == np.float32
    assert p.same_grid(volume) and p.array.shape == volume.array.shape
    assert float(p.array.min()) >= 0.0 and float(p.array.max()) <= 1.0
    np.testing.assert_array_equal(result.mask.array.astype(bool), p.array >= 0.5)


def test_threshold_override(trained):
    image, _ = phantom(seed=15)
    base = segment_volume(image, trained, cpu(largest_component=False, return_probability=True))
    strict = segment_volume(image, trained, cpu(largest_component=False, threshold=0.9))
    assert strict.mask.array.sum() < base.mask.array.sum()
    assert not (strict.mask.array & ~base.mask.array.astype(bool)).any()
    np.testing.assert_array_equal(strict.mask.array.astype(bool), base.probability.array >= 0.9)


def test_model_threshold_is_used():
    volume, _ = box_volume("axial")
    model = pointwise_model()
    model.threshold = 1.01  # no probability reaches it
    result = segment_volume(volume, model, cpu())
    assert result.mask.array.sum() == 0
    assert any("No liver was found" in w for w in result.warnings)


def test_fold_networks_are_averaged():
    volume, box = box_volume("axial", slices=5, box=((1, 4), (6, 20), (4, 14)))
    liver = pointwise_network()
    nothing = pointwise_network(gain=0.0, offset=-30.0)  # probability ~0 everywhere
    model = pointwise_model(networks=[liver, nothing])
    result = segment_volume(volume, model, cpu(return_probability=True, threshold=0.6))
    assert result.mask.array.sum() == 0  # (1 + 0) / 2 is below 0.6
    single = segment_volume(volume, pointwise_model(), cpu(return_probability=True))
    np.testing.assert_allclose(result.probability.array, single.probability.array / 2, atol=1e-6)
    low = segment_volume(volume, model, cpu(threshold=0.25))
    np.testing.assert_array_equal(low.mask.array.astype(bool), box)


def test_model_from_a_file(tmp_path):
    volume, box = box_volume("oblique_sagittal")
    path = save_model(pointwise_model(), tmp_path / "pointwise.pt")
    result = segment_volume(volume, str(path), cpu())
    np.testing.assert_array_equal(result.mask.array.astype(bool), box)


def test_progress_events():
    volume, _ = box_volume("axial", slices=9)
    events = []
    segment_volume(volume, pointwise_model(), cpu(batch_size=4), progress=events.append)
    stages = [e.stage for e in events]
    assert stages[0] is Stage.PREPROCESSING and stages[-1] is Stage.POSTPROCESSING
    fractions = [e.fraction for e in events if e.stage is Stage.INFERENCE]
    assert fractions == pytest.approx([4 / 9, 8 / 9, 1.0])


def test_cancel_stops_inference():
    volume, _ = box_volume("axial", slices=9)
    token = CancelToken()
    events = []

    def cancel_after_first_batch(event):
        events.append(event)
        if event.stage is Stage.INFERENCE:
            token.cancel()

    with pytest.raises(CancelledError):
        segment_volume(volume, pointwise_model(), cpu(batch_size=2), progress=cancel_after_first_batch, cancel=token)
    assert [e.stage for e in events].count(Stage.INFERENCE) == 1
    assert Stage.POSTPROCESSING not in [e.stage for e in events]


def test_cancel_before_start():
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        segment_volume(box_volume("axial")[0], pointwise_model(), cpu(), cancel=token)


def ct_volume() -> Volume:
    array = np.full((6, 30, 30), -1000.0, np.float32)
    array[:, 5:25, 5:25] = 40.0
    array[:, 10:15, 10:15] = 200.0
    return Volume(array, np.diag([0.8, 0.8, 3.0, 1.0]))


def test_ct_on_an_mri_model_is_refused_unless_allowed():
    with pytest.raises(LiverUNetError, match="train or fine-tune"):
        segment_volume(ct_volume(), pointwise_model(), cpu())
    result = segment_volume(ct_volume(), pointwise_model(), cpu(allow_modality_mismatch=True))
    assert any("looks like CT" in w for w in result.warnings)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((20, 20), np.float32), "2D"),
        (np.zeros((4, 20, 20, 3), np.uint8), "RGB"),
        (np.full((4, 20, 20), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images_are_refused(array, words):
    with pytest.raises(LiverUNetError, match=words):
        segment_volume(Volume(array), pointwise_model(), cpu())


def test_slice_smoothing_averages_the_probability_before_the_threshold(trained):
    image, _ = phantom(seed=15)
    raw = segment_volume(image, trained, cpu(slice_smoothing=False, largest_component=False, return_probability=True))
    smoothed = segment_volume(image, trained, cpu(largest_component=False, return_probability=True))
    assert InferenceConfig().slice_smoothing, "the product smooths by default (docs/accuracy_notes.md)"
    axis = image.slice_axis()
    expected = smooth_across_slices(raw.probability.array.copy(), axis)
    np.testing.assert_allclose(smoothed.probability.array, expected, atol=1e-6)
    np.testing.assert_array_equal(smoothed.mask.array.astype(bool), smoothed.probability.array >= 0.5)
    np.testing.assert_array_equal(raw.mask.array.astype(bool), raw.probability.array >= 0.5)
    assert not np.array_equal(raw.probability.array, smoothed.probability.array)


def test_slices_tilted_far_from_axial_are_segmented_with_a_warning():
    from engine_helpers import AXIAL, matrix, rotation_about

    image, _ = box_volume("axial")
    tilted = Volume(image.array, matrix(rotation_about("R", 46.0) @ AXIAL, (1.5, 1.5, 4.0)))
    warnings = segment_volume(tilted, pointwise_model(), InferenceConfig(device="cpu")).warnings
    assert any("tilted 46 degrees from axial" in w for w in warnings)
    straight = segment_volume(image, pointwise_model(), InferenceConfig(device="cpu")).warnings
    assert not any("tilted" in w for w in straight)
