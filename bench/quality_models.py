"""Keep each shipped model's quality calibration in its model card.

Only the card's ``quality`` entry changes: the file's other contents are written back exactly as they were
read (the float16 weights as stored, the checksums of weights and header, which the card is outside of), to a
temporary file renamed over the model. The weights are checked bit-identical before the rename.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from LiverUNetLib.model_file import load_model, weights_digest
from LiverUNetLib.shipped_models import shipped_model_path


def write_calibration(path: Path, calibration: dict[str, Any]) -> None:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    before = weights_digest(payload["state_dicts"])
    payload["card"] = {**payload.get("card", {}), "quality": calibration}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
        written = torch.load(temporary, map_location="cpu", weights_only=True)
        if weights_digest(written["state_dicts"]) != before:
            raise RuntimeError(f"{path}: the weights would change; nothing was written")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    if load_model(path).card.quality != calibration:
        raise RuntimeError(f"{path}: the calibration did not read back")
    print(f"{path.name}: calibration kept in the card; weights unchanged ({before[:12]})")


def write_calibrations(calibrations: dict[str, dict[str, Any]]) -> None:
    for modality in ("mri", "ct"):
        path = shipped_model_path(modality)
        if path is not None and modality in calibrations:
            write_calibration(path, calibrations[modality])
