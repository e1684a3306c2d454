"""The models a user can pick: the shipped default plus the ones they trained or imported.

User models live as ``*.pt`` files in one folder (default ``~/.LiverUNet/models``), each with an
optional ``<name>.provenance.json`` written by the Slicer layer after training. Listing needs no
torch: the files are only opened by the worker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from LiverUNetLib.errors import LiverUNetError

MODEL_SUFFIX = ".pt"


def defaultUserModelFolder() -> Path:
    return Path(os.environ.get("LIVERUNET_MODELS", Path.home() / ".LiverUNet" / "models"))


def shippedModelPaths() -> dict[str, Path]:
    """The models shipped inside ``LiverUNetLib/models``, by modality ("ct", "mri"), found without torch."""
    from LiverUNetLib.shipped_models import shipped_model_paths

    return shipped_model_paths()


SHIPPED_NAMES = {"ct": "Shipped CT liver model", "mri": "Shipped MRI liver model"}
# The licences of the shipped weights (their training data's terms; the code is Apache-2.0).
SHIPPED_LICENCES = {
    "mri": "CC BY-NC-SA 4.0, non-commercial use only (trained on CHAOS MRI)",
    "ct": "CC BY 4.0 (trained on BTCV CT)",
}


def licenceNote(entry: Optional["ModelEntry"], shipped: dict[str, Path]) -> str:
    """What the panel says under the model choice about the licence of the weights that would run."""
    if entry is None:
        return ""
    if entry.path is None:
        parts = [f"{m.upper()}: {SHIPPED_LICENCES[m]}" for m in sorted(shipped) if m in SHIPPED_LICENCES]
        return "Licence of the shipped weights: " + "; ".join(parts) + "." if parts else ""
    for modality, path in shipped.items():
        if path == entry.path and modality in SHIPPED_LICENCES:
            return f"Licence of these weights: {SHIPPED_LICENCES[modality]}."
    if _trainedFromScratch(entry.path):
        return ""
    licences = "; ".join(f"{m.upper()}: {t}" for m, t in sorted(SHIPPED_LICENCES.items()))
    return f"If this model was fine-tuned from a shipped model, that model's licence applies ({licences})."


def _trainedFromScratch(modelPath: Path) -> bool:
    """True when the provenance written after training says it started from random weights."""
    try:
        provenance = json.loads(provenancePath(modelPath).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(provenance, dict) and "initial_model" in provenance and provenance["initial_model"] is None


@dataclass(frozen=True)
class ModelEntry:
    """One choice in the model list. ``path`` None means the shipped default (the worker finds it)."""

    name: str
    path: Optional[Path]

    @property
    def isDefault(self) -> bool:
        return self.path is None


class ModelLibrary:
    def __init__(self, folder: Optional[Path] = None) -> None:
        self.folder = Path(folder) if folder is not None else defaultUserModelFolder()

    def entries(self) -> list[ModelEntry]:
        """The automatic choice first (the shipped model of the image's modality), each shipped model by
        name (chosen explicitly, it is checked against the image), then user models, newest first."""
        result = []
        shipped = shippedModelPaths()
        if shipped:
            result.append(ModelEntry("Shipped model for the image (CT or MRI)", None))
            result.extend(ModelEntry(SHIPPED_NAMES[m], p) for m, p in sorted(shipped.items()))
        if self.folder.is_dir():
            files = sorted(self.folder.glob(f"*{MODEL_SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
            result.extend(ModelEntry(p.stem, p) for p in files)
        return result

    def newModelPath(self, name: str) -> Path:
        """A not-yet-used file name in the library for a model called ``name``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "liver_model"
        path = self.folder / f"{stem}{MODEL_SUFFIX}"
        if path.exists():
            path = self.folder / f"{stem}_{datetime.now().strftime('%Y%m%d-%H%M%S')}{MODEL_SUFFIX}"
        return path

    def importModel(self, source: Path) -> Path:
        """Copy a model file into the library (the worker validates it when it is first used)."""
        source = Path(source)
        if not source.is_file():
            raise LiverUNetError(f"Model file not found: {source}.")
        if source.suffix != MODEL_SUFFIX:
            raise LiverUNetError(f"{source.name} is not a LiverUNet model file (*{MODEL_SUFFIX}).")
        target = self.newModelPath(source.stem)
        _copyAtomically(source, target)
        sidecar = provenancePath(source)
        if sidecar.is_file():
            _copyAtomically(sidecar, provenancePath(target))
        return target

    def exportModel(self, entry: ModelEntry, target: Path) -> Path:
        """Copy a model (and its provenance) to ``target``."""
        if entry.path is None:
            raise LiverUNetError("The automatic entry picks the CT or the MRI model by the image: choose the shipped "
                                 "CT or MRI model in the list to export it.")
        source = entry.path
        if not source.is_file():
            raise LiverUNetError(f"Model file not found: {source}.")
        target = Path(target)
        if target.suffix != MODEL_SUFFIX:
            target = target.with_name(target.name + MODEL_SUFFIX)
        _copyAtomically(source, target)
        if provenancePath(source).is_file():
            _copyAtomically(provenancePath(source), provenancePath(target))
        return target


def modelChoices(entries: list[ModelEntry], stored: str) -> tuple[list[tuple[str, str]], int]:
    """The (label, data) items of a model combo box and the index to select for the ``stored`` path text.

    A stored path that is not in the list (the file was moved or deleted) gets its own "missing" item and
    is selected, so the combo box never claims another model than the one a job would be asked to use."""
    items = [(entry.name, str(entry.path) if entry.path is not None else "") for entry in entries]
    for index, (_, data) in enumerate(items):
        if data == stored:
            return items, index
    if stored:
        items.append((f"Missing: {Path(stored).name}", stored))
        return items, len(items) - 1
    return items, 0


def provenancePath(modelPath: Path) -> Path:
    return Path(modelPath).with_suffix(".provenance.json")


def writeProvenance(modelPath: Path, provenance: dict[str, Any]) -> Path:
    path = provenancePath(modelPath)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(provenance, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _copyAtomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    try:
        shutil.copy2(source, tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
