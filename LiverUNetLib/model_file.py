"""The model file: weights plus everything needed to repeat preprocessing and inference.

Saved with ``torch.save`` of plain containers (dicts, lists, strings, numbers, tensors) and loaded
with ``torch.load(weights_only=True)``, so opening a model file never runs code from it. A file
holds one network or the k fold networks of a cross-validated ensemble, whose probabilities are
averaged at inference. Writes are atomic: a failed or cancelled save leaves any previous file intact.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from . import __version__
from .errors import LiverUNetError
from .networks import NetworkConfig, UNet
from .preprocessing import Modality, PreprocessConfig, image_modality
from .shipped_models import MODELS_FOLDER, SHIPPED_MODEL_FILES, shipped_model_path, shipped_model_paths
from .volume import Volume

FORMAT_NAME = "liverunet-model"
FORMAT_VERSION = 1
DEFAULT_MODEL_FILE = MODELS_FOLDER / SHIPPED_MODEL_FILES["mri"]


@dataclass
class ModelCard:
    """Provenance: what the model learned from and how well it did."""

    name: str = "LiverUNet model"
    description: str = ""
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    library_version: str = __version__
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    # the quality estimate's calibration for this model (quality.QualityCalibration.to_dict; bench/quality.py);
    # empty: the generic one. Outside the header checksum: it changes no mask.
    quality: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "created": self.created,
            "library_version": self.library_version,
            "training": self.training,
            "validation": self.validation,
            "data": self.data,
            "quality": self.quality,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class LiverModel:
    """One or more U-Nets (fold ensemble) with their preprocessing, threshold and model card."""

    networks: list[UNet]
    network_config: NetworkConfig
    preprocess: PreprocessConfig
    card: ModelCard = field(default_factory=ModelCard)
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not self.networks:
            raise LiverUNetError("A model needs at least one network.")
        if self.network_config.in_channels != self.preprocess.in_channels:
            raise LiverUNetError(
                f"Network input channels ({self.network_config.in_channels}) do not match the 2.5D "
                f"context ({self.preprocess.in_channels} slices)."
            )

    @classmethod
    def create(cls, network_config: NetworkConfig, preprocess: PreprocessConfig, folds: int = 1) -> "LiverModel":
        return cls([UNet(network_config) for _ in range(folds)], network_config, preprocess)

    def to(self, device: torch.device) -> "LiverModel":
        for net in self.networks:
            net.to(device)
        return self

    def eval(self) -> "LiverModel":
        for net in self.networks:
            net.eval()
        return self

    def describe(self) -> str:
        """The model card as readable text (``liverunet info``)."""
        from .networks.unet import count_parameters

        c, n, p = self.card, self.network_config, self.preprocess
        lines = [
            f"# {c.name}",
            c.description or "",
            f"created: {c.created} with LiverUNet {c.library_version}",
            f"network: 2D U-Net, depth {n.depth}, base channels {n.base_channels}, "
            f"{n.normalization.value} norm, {len(self.networks)} network(s) "
            f"({count_parameters(self.networks[0]):,} parameters each)",
            f"input: {p.modality.value.upper()}, in-plane spacing "
            f"{p.in_plane_spacing_mm if p.in_plane_spacing_mm else 'native'} mm, "
            f"{p.in_channels} slice(s) per input (2.5D context {p.context_slices})",
            f"threshold: {self.threshold}",
        ]
        for title, section in (("training", c.training), ("validation", c.validation), ("data", c.data),
                               ("quality calibration", c.quality)):
            if section:
                lines.append(f"{title}:")
                for key, value in section.items():
                    lines.append(f"  {key}: {_summary(key, value)}")
        return "\n".join(line for line in lines if line is not None)


def _summary(key: str, value: Any) -> str:
    """Card values for reading: training cases as 'name (painted/total slices)', not index lists."""
    if key == "cases" and isinstance(value, list):
        parts = [
            f"{c.get('name')} ({len(c.get('annotated_slices', []))}/{c.get('slices', '?')} slices painted)"
            for c in value
            if isinstance(c, dict)
        ]
        return f"{len(parts)}: " + ", ".join(parts)
    return str(value)


ModelSource = Union["LiverModel", str, os.PathLike, None]


def _to_plain_state(state: dict[str, torch.Tensor], half: bool) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        out[key] = tensor.contiguous()
    return out


def weights_digest(state_dicts: list[dict[str, torch.Tensor]]) -> str:
    """SHA-256 of the stored weights (names, types, shapes and bytes, in a fixed order): written with the
    model and checked on load, so a damaged file is refused instead of giving a plausible wrong mask."""
    digest = hashlib.sha256()
    for index, state in enumerate(state_dicts):
        for key in sorted(state):
            tensor = state[key].detach().cpu().contiguous()
            digest.update(f"{index}:{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def header_digest(payload: dict[str, Any]) -> str:
    """SHA-256 of what inference repeats besides the weights (network, preprocessing with its CT window or MRI
    percentiles, threshold), as canonical JSON: an edited header would otherwise give a plausible wrong mask."""
    header = {key: payload.get(key) for key in ("network", "preprocess", "threshold")}
    return hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode()).hexdigest()


def save_model(model: LiverModel, path: Union[str, os.PathLike], half_precision: bool = False) -> Path:
    """Write ``model`` atomically. ``half_precision`` stores float16 weights (half the size)."""
    path = Path(path)
    state_dicts = [_to_plain_state(net.state_dict(), half_precision) for net in model.networks]
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "network": model.network_config.to_dict(),
        "preprocess": model.preprocess.to_dict(),
        "threshold": float(model.threshold),
        "card": model.card.to_dict(),
        "state_dicts": state_dicts,
        "weights_sha256": weights_digest(state_dicts),
    }
    payload["header_sha256"] = header_digest(payload)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as error:
        raise LiverUNetError(f"Cannot write the model to {path}: {error.strerror or error}. Choose another folder.") from error
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide a shared model from colleagues
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise LiverUNetError(
                f"Could not write the model to {path}: {error.strerror or error}. Nothing was changed; "
                "free some disk space or choose another folder."
            ) from error
        raise
    return path


def load_model(path: Union[str, os.PathLike], device: Union[torch.device, str] = "cpu") -> LiverModel:
    """Read a model file without executing code from it."""
    path = Path(path)
    if not path.is_file():
        raise LiverUNetError(f"Model file not found: {path}. Check the path, or train a model first.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise LiverUNetError(
            f"{path} is not a readable LiverUNet model (damaged, truncated or another kind of file: "
            f"{type(error).__name__}). Re-export or retrain the model."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise LiverUNetError(f"{path} is not a LiverUNet model file (no '{FORMAT_NAME}' header).")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise LiverUNetError(f"{path} has no valid format version ({version!r}); it was not written by LiverUNet "
                             "or was edited. Re-export or retrain the model.")
    if version > FORMAT_VERSION:
        raise LiverUNetError(
            f"{path} was written by a newer LiverUNet ({payload.get('library_version', '?')}, file format "
            f"{version}); this is LiverUNet {__version__} (format {FORMAT_VERSION}). Update LiverUNet."
        )
    _check_weights(path, payload)
    try:
        network_config = NetworkConfig.from_dict(payload["network"])
        preprocess = PreprocessConfig.from_dict(payload["preprocess"])
        networks = []
        for state in payload["state_dicts"]:
            net = UNet(network_config)
            missing, unexpected = _key_mismatch(net, state)
            if missing or unexpected:
                raise LiverUNetError(
                    f"{path}: its weights do not fit the network its header describes ({missing} missing and "
                    f"{unexpected} unexpected weight tensors); the file is damaged or was edited. Re-export or "
                    "retrain the model.")
            net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
            networks.append(net)
        model = LiverModel(
            networks,
            network_config,
            preprocess,
            ModelCard.from_dict(payload.get("card", {})),
            float(payload.get("threshold", 0.5)),
        )
    except LiverUNetError:
        raise
    except Exception as error:
        raise LiverUNetError(
            f"{path} holds a LiverUNet model this version cannot use ({type(error).__name__}: {error}). "
            "Retrain it with this version."
        ) from None
    return model.to(torch.device(device)).eval()


def _check_weights(path: Path, payload: dict[str, Any]) -> None:
    """Refuse weights that differ from the checksum written with them (files without one predate it), and
    weights that are not finite numbers, which would give an empty or arbitrary mask."""
    states = payload.get("state_dicts")
    if not isinstance(states, list) or not all(isinstance(s, dict) for s in states):
        return  # malformed: the network build below says so
    if not all(isinstance(t, torch.Tensor) for s in states for t in s.values()):
        raise LiverUNetError(f"{path} is damaged: its weights hold values that are not tensors. Re-export or "
                             "retrain the model.")
    if payload.get("header_sha256") is not None and header_digest(payload) != payload["header_sha256"]:
        raise LiverUNetError(f"{path} is damaged or was edited: its settings (network, preprocessing, threshold) "
                             "do not match the checksum written with them. Re-export or retrain the model.")
    expected = payload.get("weights_sha256")
    if expected is not None and weights_digest(states) != expected:
        raise LiverUNetError(f"{path} is damaged: its weights do not match the checksum written with them. "
                             "Re-export or retrain the model.")
    for state in states:
        for tensor in state.values():
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise LiverUNetError(f"{path} holds weights that are not numbers (NaN or infinite), as a training "
                                     "run that diverged leaves them. Retrain the model (a lower learning rate).")


def _key_mismatch(net: UNet, state: dict[str, Any]) -> tuple[int, int]:
    expected = set(net.state_dict())
    return len(expected - set(state)), len(set(state) - expected)


def default_model_path() -> Optional[Path]:
    """The shipped MRI liver model, or None when this build ships none (``choose_shipped_model`` picks
    the shipped model that matches an image)."""
    return shipped_model_path(Modality.MRI.value)


@dataclass(frozen=True)
class ModelChoice:
    """The shipped model picked for an image, and why: the user is told which model ran."""

    path: Path
    modality: Modality
    reason: str

    def describe(self) -> str:
        return f"the shipped {self.modality.name} model ({self.path.name}), since {self.reason}"


def choose_shipped_model(volume: Volume, modality: Union[Modality, str, None] = None) -> ModelChoice:
    """The shipped model whose modality matches ``volume`` (the DICOM Modality first, the intensities
    otherwise), or the one for ``modality`` when the user said it. An image that is neither CT nor MRI, or
    one whose model this build lacks, is refused."""
    if modality is not None:
        modality, reason = Modality(modality), "the modality was given"
    else:
        modality, reason = image_modality(volume)
    path = shipped_model_path(modality.value)
    if path is None:
        raise LiverUNetError(
            f"This image is {modality.name} ({reason}), and this build ships no {modality.name} liver model. "
            "Pass a model file (--model), or train one from a few painted scans (liverunet train).")
    return ModelChoice(path, modality, reason)


def shipped_start_model(volumes: list[Volume], modality: Union[Modality, str, None] = None) -> Optional[Path]:
    """The model training starts from when the user asks for the shipped one: the shipped model of the
    modality the user set (Image type), else of the images' modality, else any shipped model (fine-tuning makes
    it a model of the images' modality), else None (training from scratch)."""
    from .preprocessing import modality_of_images

    wanted = Modality(modality) if modality is not None else modality_of_images(volumes)
    shipped = shipped_model_paths()
    return shipped.get(wanted.value) or next(iter(shipped.values()), None)


def resolve_model_described(source: ModelSource, volume: Optional[Volume] = None) -> tuple[LiverModel, str]:
    """A loaded model from a model, a path, or None (the shipped model that matches ``volume``), and which
    model it is in words: the user is told what ran."""
    if isinstance(source, LiverModel):
        return source, f"the model '{source.card.name}'"
    if source is None:
        if volume is None:
            raise LiverUNetError("No model given, and no image to choose the shipped model by. Pass a model file.")
        choice = choose_shipped_model(volume)
        return load_model(choice.path), choice.describe()
    return load_model(source), f"the model {os.fspath(source)}"


def resolve_model(source: ModelSource, volume: Optional[Volume] = None) -> LiverModel:
    """A loaded model from a model, a path, or None: the shipped model that matches ``volume``."""
    return resolve_model_described(source, volume)[0]
