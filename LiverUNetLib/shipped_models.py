"""The liver models that ship inside the package, one per modality, found without importing torch.

The Slicer layer lists them at start-up (torch is imported only in the worker); the library, the CLI and
the worker pick the one whose modality matches the image (``model_file.choose_shipped_model``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

MODELS_FOLDER = Path(__file__).resolve().parent / "models"
# modality (preprocessing.Modality values) -> file name inside MODELS_FOLDER
SHIPPED_MODEL_FILES = {"ct": "liver_ct_default.pt", "mri": "liver_mri_t2_default.pt"}
# a training job's start model meaning "the shipped model of the training images' modality"
SHIPPED_START = "shipped"


def shipped_model_path(modality: str) -> Optional[Path]:
    """The shipped model for ``modality`` ("ct" or "mri"), or None when this build does not ship it."""
    name = SHIPPED_MODEL_FILES.get(str(modality).lower())
    path = MODELS_FOLDER / name if name else None
    return path if path is not None and path.is_file() else None


def shipped_model_paths() -> dict[str, Path]:
    """Every shipped model present, by modality."""
    return {m: p for m in SHIPPED_MODEL_FILES if (p := shipped_model_path(m)) is not None}
