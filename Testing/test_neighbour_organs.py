"""Neighbouring organs learnt beside the liver (``TrainConfig.neighbour_organs``): the masks that reach the
network, the loss, a model that learns them, fine-tuning such a model on liver paint, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cli_phantoms import phantom
from engine_helpers import (  # noqa: F401 - one_thread: autouse fixture
    LEARNABLE_SETTINGS,
    ORIENTATIONS,
    box_volume,
    dice,
    one_thread,
    single_torch_thread,
)
from LiverUNetLib import augmentation, training
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.inference import InferenceConfig, segment_volume
from LiverUNetLib.labels import SparseLabel, sparse_label_from_mask
from LiverUNetLib.losses import dice_bce_loss, neighbour_organs_loss
from LiverUNetLib.model_file import load_model
from LiverUNetLib.networks import NetworkConfig
from LiverUNetLib.preprocessing import canonical_orientation
from LiverUNetLib.training import TrainConfig, TrainingCase, prepare_case, train

CPU = torch.device("cpu")
#: base 4 learnt one of the two phantom organs at most; base 8 learns all three outputs in about 18 s
ORGAN_SETTINGS = dict(LEARNABLE_SETTINGS, epochs=30, samples_per_epoch=64, base_channels=8)


def organ_phantom(seed: int) -> TrainingCase:
    """The bright-ellipsoid phantom with a 'kidney' (organ 1: a block brighter than the liver, beside it) and
    a 'spleen' (organ 2: a dark block at the other side); every slice labelled."""
    image, liver = phantom(seed=seed)
    organs = np.zeros(image.array.shape, dtype=np.uint8)
    organs[1:7, 28:38, 2:14] = 1
    organs[1:7, 2:10, 32:42] = 2
    organs[liver.array > 0] = 0
    array = image.array.copy()
    array[organs == 1] = 1000
    array[organs == 2] = 40
    image = image.with_array(np.clip(array, 0, None).astype(np.int16))
    return TrainingCase(f"organs{seed}", image, sparse_label_from_mask(image, liver), organs)


@pytest.fixture(scope="module")
def organ_cases() -> list[TrainingCase]:
    return [organ_phantom(seed) for seed in range(3)]


@pytest.fixture(scope="module")
def organ_model(tmp_path_factory, organ_cases):
    path = tmp_path_factory.mktemp("organs") / "organs.pt"
    with torch.random.fork_rng(), single_torch_thread():  # module fixtures run before the autouse one_thread
        train(organ_cases, TrainConfig(**ORGAN_SETTINGS, neighbour_organs=2), path,
              resume=False)
    return path


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_prepared_masks_hold_the_liver_then_each_organ_resampled_alike(orientation):
    """Each organ channel is what the liver channel would be had that organ been painted, in every stored
    layout: the canonical view flips and transposes rows and columns, never the organ channels."""
    image, box = box_volume(orientation, slices=12, box=((2, 9), (6, 20), (4, 14)))
    first = np.zeros((12, 30, 34), dtype=np.uint8)  # slice-first, as box_volume takes its box
    first[3:8, 22:28, 20:30] = 1
    first[5:11, 2:5, 24:32] = 2
    organs = np.moveaxis(first, 0, image.slice_axis())
    label = sparse_label_from_mask(image, image.with_array(box.astype(np.uint8))).keep_every_k(2)
    preprocess = TrainConfig(in_plane_spacing_mm=2.0).preprocess_config()
    both = prepare_case(TrainingCase("c", image, label, organs), preprocess, CPU, neighbour_organs=2)
    liver_only = prepare_case(TrainingCase("c", image, label), preprocess, CPU)
    assert both.masks.shape[:2] == (label.annotated_count, 3) and liver_only.masks.shape[1] == 1
    assert torch.equal(both.masks[:, :1], liver_only.masks)
    for organ in (1, 2):
        as_liver = SparseLabel(organs == organ, label.annotated, label.slice_axis)
        alone = prepare_case(TrainingCase("o", image, as_liver), preprocess, CPU)
        assert torch.equal(both.masks[:, organ], alone.masks[:, 0])
        assert both.masks[:, organ].sum() > 0
    assert 10 not in label.annotated.tolist()  # organ 2's slice 10 is not painted, so never read


def test_the_layouts_above_include_flipped_and_transposed_views():
    views = {orientation: canonical_orientation(box_volume(orientation)[0]) for orientation in ORIENTATIONS}
    assert any(v.transpose for v in views.values()) and any(v.flip_rows or v.flip_cols for v in views.values())


def test_a_model_learns_its_neighbour_organs_and_segments_the_liver_alone(organ_model, organ_cases):
    model = load_model(organ_model)
    assert model.network_config.out_channels == 3
    assert model.card.training["settings"]["neighbour_organs"] == 2
    case = organ_phantom(seed=7)  # a phantom the model never saw
    result = segment_volume(case.image, model, InferenceConfig(device="cpu"))
    assert result.mask.array.shape == case.image.array.shape
    assert dice(result.mask.array > 0, case.label.mask) > 0.8
    # the organ outputs found the organs: mean probability inside each organ far above outside it
    net = model.networks[0].eval()
    prepared = prepare_case(case, model.preprocess, CPU, neighbour_organs=2)
    position = int(np.flatnonzero(prepared.masks[:, 1].sum((1, 2)))[1])  # an annotated slice with organ 1
    middle = int(prepared.annotated[position])
    assert model.preprocess.context_slices == 1 and 0 < middle < len(prepared.images) - 1
    x = prepared.images[middle - 1 : middle + 2][None]  # the slice and its two neighbours
    height, width = x.shape[-2:]
    multiple = model.network_config.size_multiple
    pad = (0, (-width) % multiple, 0, (-height) % multiple)
    with torch.inference_mode():
        probability = torch.sigmoid(net(torch.nn.functional.pad(x, pad))[0, :, :height, :width])
    for organ in (1, 2):
        inside = prepared.masks[position, organ] > 0
        assert probability[organ][inside].mean() > probability[organ][~inside].mean() + 0.5


def test_fine_tuning_such_a_model_on_liver_paint_trains_the_liver_output(organ_model, organ_cases, tmp_path,
                                                                          monkeypatch):
    painted = [TrainingCase(c.name, c.image, c.label) for c in organ_cases]  # a clinician paints the liver only

    def no_organ_loss(*args, **kwargs):
        raise AssertionError("a fine-tuning on liver paint must not train the organ outputs")

    monkeypatch.setattr(training, "neighbour_organs_loss", no_organ_loss)
    out = tmp_path / "tuned.pt"
    train(painted, TrainConfig(**dict(LEARNABLE_SETTINGS, epochs=1)), out, init_model=organ_model, resume=False)
    tuned, start = load_model(out), load_model(organ_model)
    assert tuned.network_config.out_channels == 3
    changed = [not torch.equal(a, b) for a, b in zip(tuned.networks[0].state_dict().values(),
                                                      start.networks[0].state_dict().values())]
    assert any(changed)
    with pytest.raises(LiverUNetError, match="start model has 2 neighbouring-organ outputs, not 3"):
        train(organ_cases, TrainConfig(**LEARNABLE_SETTINGS, neighbour_organs=3), tmp_path / "x.pt",
              init_model=organ_model, resume=False)


def test_a_case_without_its_organ_map_is_refused_with_what_to_do(organ_cases, tmp_path):
    bare = TrainingCase("bare", organ_cases[0].image, organ_cases[0].label)
    with pytest.raises(LiverUNetError, match="Case 'bare' has no neighbouring-organ labels.*set neighbour_organs to 0"):
        train([organ_cases[1], bare], TrainConfig(**LEARNABLE_SETTINGS, neighbour_organs=2), tmp_path / "m.pt")
    wrong = TrainingCase("wrong", bare.image, bare.label, organ_cases[0].neighbours[:-1])
    with pytest.raises(LiverUNetError, match="Case 'wrong': the neighbouring-organ map's shape"):
        train([wrong], TrainConfig(**LEARNABLE_SETTINGS, neighbour_organs=2), tmp_path / "m.pt")
    with pytest.raises(LiverUNetError, match="neighbour_organs and neighbour_weight must be 0 or more"):
        TrainConfig(neighbour_organs=-1)
    assert not (tmp_path / "m.pt").exists()


def test_models_written_before_the_setting_read_as_liver_only():
    old = {"in_channels": 3, "base_channels": 16, "depth": 4, "normalization": "batch", "dropout": 0.0}
    assert NetworkConfig.from_dict(old).out_channels == 1
    assert TrainConfig().network_config().out_channels == 1
    assert TrainConfig(neighbour_organs=3).network_config().out_channels == 4


def test_the_neighbour_loss_is_the_mean_of_each_organ_s_dice_bce():
    target = torch.zeros(2, 2, 8, 8)
    target[:, 0, 2:5, 2:5] = 1
    target[:, 1, 5:8, 5:8] = 1
    valid = torch.ones(2)
    perfect = (target * 2 - 1) * 20
    assert float(neighbour_organs_loss(perfect, target, valid)) < 0.01
    logits = torch.randn(2, 2, 8, 8)
    separate = [dice_bce_loss(logits[:, c : c + 1], target[:, c : c + 1], valid) for c in range(2)]
    assert torch.isclose(neighbour_organs_loss(logits, target, valid), (separate[0] + separate[1]) / 2)
    # nothing painted in the batch: no loss, as for the liver
    assert float(neighbour_organs_loss(logits, target, torch.zeros(2))) == 0.0


def test_liver_brightness_changes_the_liver_and_never_a_neighbour_organ():
    image = torch.full((1, 1, 10, 10), 100.0)
    image[..., 0, 0] = 0.0  # the slice minimum the scaling keeps
    mask = torch.zeros(1, 2, 10, 10)
    mask[:, 0, 2:5, 2:5] = 1
    mask[:, 1, 6:9, 6:9] = 1
    transform = augmentation.RandomLiverBrightness(factor=(0.5, 0.5), probability=1.0, soften=1)
    out = transform(augmentation.Batch(image, mask, torch.ones(1)), torch.Generator().manual_seed(0)).image
    assert torch.allclose(out[0, 0, 2:5, 2:5], torch.tensor(50.0))
    assert torch.allclose(out[0, 0, 6:9, 6:9], torch.tensor(100.0))
