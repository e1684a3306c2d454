"""Worker job descriptions (see docs/architecture.md, "Worker protocol") and their temporary files.

Every job gets its own temporary folder holding the job file, the input images and the outputs;
:class:`~.worker_runner.WorkerProcess` removes it when the job ends, whatever the outcome.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.shipped_models import SHIPPED_START
from LiverUNetLib.volume import Volume

from .options import Device, optionalPath


def resolveModelPath(model: object) -> Optional[Path]:
    """A model argument (path-like, or None/"" for the shipped default) as an existing absolute path."""
    if model is None or str(model) == "":
        return None
    path = Path(str(model)).expanduser()
    if not path.is_file():
        raise LiverUNetError(f"Model file not found: {path}. Choose another model or train one.")
    return path.resolve()


def resolveStartModel(model: object) -> Union[Path, str, None]:
    """A training start: a model file, ``SHIPPED_START`` (the worker takes the shipped model of the training
    images' modality, so a CT starts from the CT model) or None/"" (random weights)."""
    if model == SHIPPED_START:
        return SHIPPED_START
    return resolveModelPath(model)


def writeVolumeFile(volume: Volume, path: Path) -> None:
    """Write an image for the worker (NRRD keeps the full geometry)."""
    from LiverUNetLib.image_io import write_image  # SimpleITK is imported only when a job starts

    write_image(volume, path)


def fileStem(path: Path) -> str:
    """A file name without its image ending (".nii.gz" and ".seg.nrrd" count as one ending)."""
    name = path.name
    for ending in (".seg.nrrd", ".nii.gz", ".nrrd", ".nii", ".mha", ".mhd", ".nhdr"):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return path.stem if path.suffix else name


def newWorkDir(root: Optional[Path] = None) -> Path:
    """A fresh private folder for one job (under ``root`` or the system's temporary folder)."""
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="LiverUNet-", dir=str(root) if root is not None else None))


@dataclass
class SegmentJob:
    input: Path
    output: Path
    model: Optional[Path] = None
    device: Device = Device.AUTO
    tta: bool = False

    def toDict(self) -> dict[str, Any]:
        return {
            "kind": "segment",
            "input": str(self.input),
            "output": str(self.output),
            "model": optionalPath(self.model),
            "device": self.device.value,
            "tta": bool(self.tta),
            "probability_output": None,
        }


@dataclass
class TrainCaseFiles:
    name: str
    image: Path
    label: Path
    labelValue: int = 1
    emptyLabelValue: Optional[int] = None

    def toDict(self) -> dict[str, Any]:
        return {"name": self.name, "image": str(self.image), "label": str(self.label),
                "label_value": self.labelValue, "empty_label_value": self.emptyLabelValue}


@dataclass
class TrainJob:
    cases: list[TrainCaseFiles]
    output: Path
    settings: dict[str, Any] = field(default_factory=dict)
    init: Union[Path, str, None] = None  # a model file, SHIPPED_START or None (resolveStartModel)

    def toDict(self) -> dict[str, Any]:
        return {
            "kind": "train",
            "cases": [case.toDict() for case in self.cases],
            "output": str(self.output),
            "settings": dict(self.settings),
            "init": optionalPath(self.init),
        }
