"""*Fill from painted slices*: a volume painted on a few slices, completed by a model tuned on those slices.

One function does the whole fill, so Slicer's effect (through the worker's ``fill`` job), ``liverunet fill``
and the fill benchmarks run exactly the same thing: fine-tune the start model (by default the shipped model of
the image's modality) on this volume's painted slices with :data:`~.fill_recipe.FILL_RECIPE`, segment the
volume with the tuned model, and keep the painted slices exactly as painted: a learned "Fill between slices".
The tuned model lives in a temporary folder that is removed however the fill ends.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .errors import LiverUNetError
from .fill_recipe import FILL_RECIPE, FillRecipe
from .labels import SparseLabel
from .model_file import LiverModel, load_model, shipped_start_model
from .preprocessing import Modality
from .progress import CancelToken, ProgressCallback, ProgressEvent, Stage, ignore_progress
from .quality import QualityEstimate
from .shipped_models import SHIPPED_START
from .volume import Volume

#: What the fill starts from: a model, a model file, SHIPPED_START (the shipped model of the image's modality,
#: random weights when none ships) or None (random weights).
StartModel = Union[LiverModel, str, os.PathLike, None]

TRAIN_SHARE = 0.9  # of the progress bar: tuning takes nearly all the time, segmenting the rest


@dataclass
class FillResult:
    """The filled mask (uint8 0/1 on the image's grid; the painted slices exactly as painted) and how it was made."""

    mask: Volume
    painted: list[int]  # the painted slices, indices along slice_axis
    slice_axis: int
    seconds: float
    device: str
    model: str  # what the fill started from, in words
    warnings: list[str] = field(default_factory=list)
    # the tuned model's quality estimate on this image (before the painting is pasted in): its per-slice
    # uncertainty orders the slices to paint next (slice_suggestions.py); its Dice is not calibrated for fills
    quality: Optional[QualityEstimate] = None


def _start(start_model: StartModel, image: Volume, modality: Optional[Modality]) -> tuple[Optional[LiverModel], str]:
    """The model to fine-tune (None: random weights) and what it is, in words."""
    if isinstance(start_model, LiverModel):
        return start_model, f"the model '{start_model.card.name}'"
    if isinstance(start_model, str) and start_model == SHIPPED_START:
        path = shipped_start_model([image], modality)
        if path is None:
            return None, "random weights (this build ships no model)"
        return load_model(path), f"the shipped model {path.name}"
    if start_model is None:
        return None, "random weights"
    return load_model(start_model), f"the model {os.fspath(start_model)}"


def _share(progress: ProgressCallback, offset: float, share: float) -> ProgressCallback:
    """A step's progress as part of the whole fill: its fractions scaled into [offset, offset + share], its
    own "done" left out (the fill says when it is done)."""

    def forward(event: ProgressEvent) -> None:
        if event.stage is Stage.DONE:
            return
        if event.fraction is not None:
            event.fraction = offset + share * min(max(event.fraction, 0.0), 1.0)
        progress(event)

    return forward


def paste_painted(mask: np.ndarray, painted: SparseLabel) -> np.ndarray:
    """``mask`` (uint8 0/1) with the painted slices replaced by the painting."""
    filled = (np.asarray(mask) != 0).astype(np.uint8)
    index: list[Any] = [slice(None)] * 3
    index[painted.slice_axis] = painted.annotated
    filled[tuple(index)] = painted.mask[tuple(index)]
    return filled


def check_painted(image: Volume, painted: SparseLabel) -> None:
    """Refuse, in one line, a painting that does not belong to the image or holds no painted slice."""
    image.validate_scalar_3d("image")
    if painted.mask.shape != image.array.shape:
        raise LiverUNetError(f"The painted label's shape {painted.mask.shape} differs from the image's "
                             f"{image.array.shape}. Export the segment with the image as reference geometry.")
    if painted.annotated_count == 0 or not painted.mask.any():
        raise LiverUNetError("Nothing is painted. Outline the whole liver on a few slices (for example every "
                             "5th to 10th slice), then fill.")
    if painted.slice_axis != image.slice_axis():
        raise LiverUNetError("The painted label's slice axis is not the image's (its slices run head to foot).")


def fill_from_painted(
    image: Volume,
    painted: SparseLabel,
    start_model: StartModel = SHIPPED_START,
    recipe: FillRecipe = FILL_RECIPE,
    device: str = "auto",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    modality: Union[Modality, str, None] = None,
) -> FillResult:
    """Fill the liver between the painted slices of ``image``; ``painted`` marks them (as ``liverunet train``
    reads a label: a slice holding liver is painted). ``modality`` names the image's modality instead of
    telling it from the image. A cancel raises :class:`CancelledError` and leaves no file behind."""
    from .inference import InferenceConfig, segment_volume
    from .training import TrainConfig, TrainingCase, train

    started = time.perf_counter()
    progress = progress or ignore_progress
    cancel = cancel or CancelToken()
    check_painted(image, painted)
    modality = Modality(modality) if modality is not None else None
    progress(ProgressEvent(Stage.LOADING, 0.0, "Loading the start model"))
    start, start_words = _start(start_model, image, modality)
    cancel.check()
    settings = {**recipe.train_settings(fine_tune=start is not None), "device": str(getattr(device, "value", device))}
    if modality is not None:
        settings["modality"] = modality.value
    config = TrainConfig.from_dict(settings)
    with tempfile.TemporaryDirectory(prefix="LiverUNet-fill-") as folder:
        path = Path(folder) / "fill.pt"
        train([TrainingCase("painted slices", image, painted)], config, path, init_model=start,
              progress=_share(progress, 0.0, TRAIN_SHARE), cancel=cancel, resume=False)
        tuned = load_model(path)
    cancel.check()
    result = segment_volume(image, tuned, InferenceConfig(device=config.device, allow_modality_mismatch=modality is not None),
                            progress=_share(progress, TRAIN_SHARE, 1.0 - TRAIN_SHARE), cancel=cancel)
    mask = image.with_array(paste_painted(result.mask.array, painted))
    painted_slices = [int(i) for i in painted.annotated]
    how = "tuned on" if start is not None else "trained on"
    progress(ProgressEvent(Stage.DONE, 1.0, "Filled"))
    return FillResult(mask, painted_slices, painted.slice_axis, time.perf_counter() - started, result.device,
                      f"{start_words}, {how} the {len(painted_slices)} painted slices", list(result.warnings),
                      result.quality)
