"""The model file: exact round trip, no code execution on load, clear errors, atomic saves."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch

from engine_helpers import one_thread  # noqa: F401 - autouse fixture
from LiverUNetLib import model_file, shipped_models
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.model_file import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LiverModel,
    ModelCard,
    default_model_path,
    load_model,
    resolve_model,
    save_model,
)
from LiverUNetLib.networks import NetworkConfig, Normalization
from LiverUNetLib.preprocessing import Modality, PreprocessConfig
from LiverUNetLib.volume import Volume


def tiny_model(folds: int = 1, normalization=Normalization.BATCH, context: int = 0, seed: int = 0) -> LiverModel:
    torch.manual_seed(seed)
    network = NetworkConfig(in_channels=2 * context + 1, base_channels=4, depth=2, normalization=normalization)
    preprocess = PreprocessConfig(Modality.CT, in_plane_spacing_mm=1.7, context_slices=context, ct_window=(-120.0, 240.0))
    model = LiverModel.create(network, preprocess, folds=folds)
    # non-trivial buffers, so a file that forgot the BatchNorm statistics would be caught
    for net in model.networks:
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(17)
    model.card = ModelCard(name="tiny", description="for tests", training={"epochs_run": [3]}, validation={"mean_dice": 0.5})
    model.threshold = 0.4
    return model.eval()


def outputs(model: LiverModel, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [net.eval()(x) for net in model.networks]


@pytest.mark.parametrize("normalization", [Normalization.BATCH, Normalization.GROUP])
def test_round_trip_gives_identical_outputs(tmp_path, normalization):
    model = tiny_model(folds=2, normalization=normalization, context=1)
    path = save_model(model, tmp_path / "m.pt")
    assert path == tmp_path / "m.pt"
    loaded = load_model(path)
    x = torch.randn(2, 3, 16, 20)
    for a, b in zip(outputs(model, x), outputs(loaded, x)):
        assert torch.equal(a, b)
    assert len(loaded.networks) == 2
    assert loaded.network_config == model.network_config
    assert loaded.preprocess == model.preprocess
    assert loaded.threshold == 0.4
    assert loaded.card.to_dict() == model.card.to_dict()
    assert not any(net.training for net in loaded.networks)
    for a, b in zip(model.networks, loaded.networks):
        for (key, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(va, vb), key


def test_half_precision_round_trip(tmp_path):
    model = tiny_model()
    full = save_model(model, tmp_path / "full.pt")
    half = save_model(model, tmp_path / "half.pt", half_precision=True)
    assert half.stat().st_size < 0.75 * full.stat().st_size
    loaded = load_model(half)
    # weights come back as float32 equal to the float16-rounded originals, integer buffers untouched
    for key, value in model.networks[0].state_dict().items():
        got = loaded.networks[0].state_dict()[key]
        if value.is_floating_point():
            assert got.dtype == torch.float32
            assert torch.equal(got, value.half().float()), key
        else:
            assert torch.equal(got, value), key
    rounded = tiny_model()
    with torch.no_grad():
        for p in list(rounded.networks[0].parameters()) + list(rounded.networks[0].buffers()):
            if p.is_floating_point():
                p.copy_(p.half().float())
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(outputs(loaded, x)[0], outputs(rounded, x)[0])
    torch.testing.assert_close(outputs(loaded, x)[0], outputs(model, x)[0], rtol=2e-2, atol=2e-2)


def test_saving_leaves_the_model_in_place(tmp_path):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.networks[0].state_dict().items()}
    save_model(model, tmp_path / "m.pt", half_precision=True)
    for key, value in model.networks[0].state_dict().items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key])


class WritesAMarker:
    """Unpickling this object would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_loading_never_runs_code_from_the_file(tmp_path):
    marker = tmp_path / "code_ran.txt"
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "network": NetworkConfig(base_channels=4, depth=2).to_dict(),
        "preprocess": PreprocessConfig().to_dict(),
        "card": {"name": WritesAMarker(marker)},
        "state_dicts": [],
    }
    path = tmp_path / "evil.pt"
    torch.save(payload, path)
    assert not marker.exists()
    with pytest.raises(LiverUNetError, match="evil.pt"):
        load_model(path)
    assert not marker.exists(), "loading a model file executed code from it"
    # control: an unsafe load of the same file really would have run the code
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_loading_a_plain_pickle_does_not_run_code(tmp_path):
    import pickle

    marker = tmp_path / "pickle_ran.txt"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"format": FORMAT_NAME, "x": WritesAMarker(marker)}))
    with pytest.raises(LiverUNetError):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 64, b"PK\x03\x04 this is not really a zip", b"# a text file\n"],
    ids=["empty", "zeros", "fake-zip", "text"],
)
def test_damaged_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / "damaged.pt"
    path.write_bytes(content)
    with pytest.raises(LiverUNetError, match="not a readable LiverUNet model") as info:
        load_model(path)
    assert "damaged.pt" in str(info.value)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.95])
def test_truncated_file(tmp_path, fraction):
    good = save_model(tiny_model(), tmp_path / "good.pt").read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(good[: int(len(good) * fraction)])
    with pytest.raises(LiverUNetError, match="damaged, truncated"):
        load_model(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(LiverUNetError, match="not found"):
        load_model(tmp_path / "none.pt")
    with pytest.raises(LiverUNetError, match="not found"):
        load_model(tmp_path)


def raw_payload(**changes):
    model = tiny_model()
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": "0.0.0",
        "network": model.network_config.to_dict(),
        "preprocess": model.preprocess.to_dict(),
        "threshold": 0.5,
        "card": {},
        "state_dicts": [model.networks[0].state_dict()],
    }
    payload.update(changes)
    return payload


def test_newer_format_version(tmp_path):
    path = tmp_path / "future.pt"
    torch.save(raw_payload(format_version=FORMAT_VERSION + 1, library_version="9.0"), path)
    with pytest.raises(LiverUNetError, match="newer LiverUNet") as info:
        load_model(path)
    assert "9.0" in str(info.value) and "Update LiverUNet" in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [
        {"weights": torch.zeros(3)},
        torch.zeros(3),
        [1, 2, 3],
        {"format": "some-other-model", "format_version": 1},
    ],
    ids=["no-header", "tensor", "list", "other-format"],
)
def test_wrong_header(tmp_path, payload):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(LiverUNetError, match="not a LiverUNet model file"):
        load_model(path)


@pytest.mark.parametrize(
    "changes",
    [
        {"format_version": "1"},
        {"network": {"base_channels": 8, "depth": 2}},  # weights do not fit the network
        {"state_dicts": [{"junk": torch.zeros(1)}]},
        {"preprocess": {"modality": "xray"}},
    ],
    ids=["version-text", "wrong-shapes", "wrong-keys", "bad-modality"],
)
def test_incompatible_content(tmp_path, changes):
    path = tmp_path / "odd.pt"
    torch.save(raw_payload(**changes), path)
    with pytest.raises(LiverUNetError, match="odd.pt"):
        load_model(path)


def test_file_without_networks(tmp_path):
    path = tmp_path / "empty.pt"
    torch.save(raw_payload(state_dicts=[]), path)
    with pytest.raises(LiverUNetError, match="at least one network"):
        load_model(path)


def test_in_channels_must_match_the_context():
    with pytest.raises(LiverUNetError, match="input channels"):
        LiverModel.create(NetworkConfig(in_channels=1, base_channels=4, depth=2), PreprocessConfig(context_slices=1))
    with pytest.raises(LiverUNetError, match="at least one network"):
        LiverModel([], NetworkConfig(), PreprocessConfig())


def disk_full_midway(obj, f, *args, **kwargs):
    """Stands in for torch.save: writes part of a file, then the disk is full."""
    f.write(b"partial bytes")
    f.flush()
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_model(tiny_model(seed=1), path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", disk_full_midway)
    with pytest.raises(LiverUNetError, match="Nothing was changed") as info:
        save_model(tiny_model(seed=2), path)
    assert "disk space" in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_model(tiny_model(seed=1), path)
    before = path.read_bytes()

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model(tiny_model(seed=2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", disk_full_midway)
    with pytest.raises(LiverUNetError):
        save_model(tiny_model(), tmp_path / "new.pt")
    assert list(tmp_path.iterdir()) == []


def test_save_into_an_impossible_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(LiverUNetError, match="Cannot write the model"):
        save_model(tiny_model(), blocker / "model.pt")


def test_save_creates_missing_folders(tmp_path):
    path = save_model(tiny_model(), tmp_path / "a" / "b" / "m.pt")
    assert load_model(path).card.name == "tiny"


def test_no_shipped_model_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped_models, "MODELS_FOLDER", tmp_path / "missing")
    assert default_model_path() is None
    with pytest.raises(LiverUNetError, match="ships no MRI liver model") as info:
        resolve_model(None, Volume(100.0 + np.arange(256, dtype=np.float32).reshape(4, 8, 8), np.eye(4)))
    assert "--model" in str(info.value) and "liverunet train" in str(info.value)


def test_shipped_model_is_used_when_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped_models, "MODELS_FOLDER", tmp_path)
    path = save_model(tiny_model(), tmp_path / shipped_models.SHIPPED_MODEL_FILES["mri"])
    assert default_model_path() == path
    assert resolve_model(None, Volume(100.0 + np.arange(256, dtype=np.float32).reshape(4, 8, 8), np.eye(4))).card.name == "tiny"


def test_resolve_model_accepts_a_model_or_a_path(tmp_path):
    model = tiny_model()
    assert resolve_model(model) is model
    path = save_model(model, tmp_path / "m.pt")
    assert resolve_model(path).threshold == 0.4
    assert resolve_model(str(path)).threshold == 0.4


def test_describe_is_a_readable_card():
    text = tiny_model(folds=3, context=1).describe()
    assert text.startswith("# tiny")
    for words in ("depth 2", "base channels 4", "3 network(s)", "CT", "1.7 mm", "3 slice(s)", "threshold: 0.4",
                  "training:", "epochs_run: [3]", "validation:", "mean_dice: 0.5"):
        assert words in text, words


def test_card_round_trip_ignores_unknown_keys():
    card = ModelCard.from_dict({"name": "x", "future_field": 1, "data": {"a": 1}})
    assert card.name == "x" and card.data == {"a": 1}


# --- damaged or edited files are refused, not run ------------------------------------------------


def _edit_payload(path: Path, change) -> Path:
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


def test_weights_that_differ_from_their_checksum_are_refused(tmp_path):
    path = save_model(tiny_model(), tmp_path / "m.pt")
    assert torch.load(path, weights_only=True)["weights_sha256"]

    def flip_one_weight(payload):
        tensor = next(t for t in payload["state_dicts"][0].values() if t.is_floating_point())
        tensor.view(-1)[0] += 1.0

    _edit_payload(path, flip_one_weight)
    with pytest.raises(LiverUNetError, match="damaged: its weights do not match the checksum"):
        load_model(path)


def test_weights_that_are_not_numbers_are_refused_even_without_a_checksum(tmp_path):
    path = save_model(tiny_model(), tmp_path / "m.pt")

    def poison(payload):
        del payload["weights_sha256"]  # as a file written before checksums
        next(t for t in payload["state_dicts"][0].values() if t.is_floating_point()).view(-1)[0] = float("nan")

    _edit_payload(path, poison)
    with pytest.raises(LiverUNetError, match="not numbers"):
        load_model(path)


def test_a_file_without_a_checksum_still_loads(tmp_path):
    path = _edit_payload(save_model(tiny_model(), tmp_path / "m.pt"), lambda p: p.pop("weights_sha256"))
    assert load_model(path).card.name == "tiny"


def test_a_format_version_that_is_not_a_number_is_named_as_such(tmp_path):
    path = _edit_payload(save_model(tiny_model(), tmp_path / "m.pt"), lambda p: p.update(format_version="1"))
    with pytest.raises(LiverUNetError, match=r"no valid format version \('1'\)"):
        load_model(path)


def test_weights_that_do_not_fit_the_network_are_described_in_one_line(tmp_path):
    def drop_a_layer(payload):
        state = payload["state_dicts"][0]
        del state[sorted(state)[0]]
        payload.pop("weights_sha256")

    path = _edit_payload(save_model(tiny_model(), tmp_path / "m.pt"), drop_a_layer)
    with pytest.raises(LiverUNetError, match=r"do not fit the network its header describes \(1 missing") as info:
        load_model(path)
    assert "\n" not in str(info.value) and "encoders" not in str(info.value)


def test_an_edited_header_is_refused(tmp_path):
    """The CT window or the threshold changed by hand would give a plausible wrong mask."""
    path = _edit_payload(save_model(tiny_model(), tmp_path / "m.pt"),
                         lambda p: p["preprocess"].update(ct_window=[-1000.0, 1000.0]))
    with pytest.raises(LiverUNetError, match="its settings .* do not match the checksum"):
        load_model(path)


def test_weights_that_are_not_tensors_are_refused_in_one_line(tmp_path):
    def corrupt(payload):
        payload["state_dicts"][0]["head.bias"] = "not a tensor"

    path = _edit_payload(save_model(tiny_model(), tmp_path / "m.pt"), corrupt)
    with pytest.raises(LiverUNetError, match="hold values that are not tensors"):
        load_model(path)
