"""Small enums shared by the logic, the panel's parameter node and the effect.

Defined here (not imported from ``LiverUNetLib.devices``) because that module imports torch, and
the Slicer module must load and show its panel before torch is installed.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional, Union


class Device(Enum):
    """Where the network runs; the value is what the worker's ``device`` field takes."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"

    def label(self) -> str:
        return {"auto": "Automatic (GPU if available)", "cpu": "CPU", "cuda": "NVIDIA GPU (CUDA)",
                "mps": "Apple GPU (MPS)"}[self.value]


def toDevice(device: Union["Device", str, None]) -> Device:
    """Accept an enum, its value ("auto", "cpu", "cuda", "mps", also "gpu" for CUDA) or None (auto)."""
    if device is None:
        return Device.AUTO
    if isinstance(device, Device):
        return device
    text = str(device).strip().lower()
    if text == "gpu":
        return Device.CUDA
    try:
        return Device(text)
    except ValueError:
        from LiverUNetLib.errors import LiverUNetError

        raise LiverUNetError(f"Unknown device '{device}'; use auto, cpu, cuda or mps.") from None


class StartFrom(Enum):
    """What training starts from."""

    SELECTED_MODEL = "selected"
    SCRATCH = "scratch"

    def label(self) -> str:
        return {"selected": "The selected model (fine-tune)", "scratch": "Scratch (random weights)"}[self.value]


class EffectMode(Enum):
    """What the Segment Editor effect does."""

    SEGMENT = "segment"
    FILL_FROM_PAINTED = "fill"

    def label(self) -> str:
        return {"segment": "Segment the whole volume", "fill": "Fill from painted slices"}[self.value]


class Modality(Enum):
    """The images a trained model is for: its intensity normalisation and the images it accepts.

    AUTO reads it from the training images, also when fine-tuning a model of the other modality
    (the shipped MRI model fine-tuned on painted CT becomes a CT model).
    """

    AUTO = "auto"
    MRI = "mri"
    CT = "ct"

    def label(self) -> str:
        return "Automatic (from the images)" if self is Modality.AUTO else self.value.upper()

    def trainSetting(self) -> Optional[str]:
        """``TrainConfig.modality``: None lets the library read it from the images."""
        return None if self is Modality.AUTO else self.value


def optionalPath(value: Optional[object]) -> Optional[str]:
    """A path as a string for a job file, or None."""
    return None if value is None or str(value) in ("", ".") else str(value)
