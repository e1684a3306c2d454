"""Training cases from files: an image plus a label image or a Slicer ``.seg.nrrd``.

Shared by the command line and the worker, so both read painted labels the same way.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import LiverUNetError
from .image_io import read_image
from .labels import sparse_label_from_mask
from .segmentation_file import (
    NOT_LIVER_NAME,
    is_segmentation_file,
    liver_voxels,
    place_on_grid,
    read_label_volume,
    read_segment_mask,
    segment_names,
)
from .training import TrainConfig, TrainingCase


def load_training_case(
    name: str,
    image_path: Path,
    label_path: Path,
    label_value: Optional[int] = None,
    segment_name: Optional[str] = None,
    empty_label_value: Optional[int] = None,
    every_k: int = 1,
    dense: bool = False,
):
    """A :class:`TrainingCase` from an image and a label file (label image or ``.seg.nrrd``).

    In a ``.seg.nrrd`` a segment named "Not liver" marks painted slices without liver; in a label
    image ``empty_label_value`` does.
    """
    image = read_image(image_path)
    image.validate_scalar_3d(f"image {image_path.name}")
    background = None
    if is_segmentation_file(label_path):
        liver = read_label_volume(label_path, label_value, segment_name, reference=image)
        names = segment_names(label_path)
        not_liver = [n for n in names if n.strip().lower() == NOT_LIVER_NAME.lower()]
        if len(not_liver) == 1 and (segment_name or "liver").lower() != not_liver[0].lower():
            background = place_on_grid(read_segment_mask(label_path, not_liver[0]), image).array != 0
    else:
        raw = place_on_grid(read_image(label_path), image)
        values = raw.array
        liver = raw.with_array(liver_voxels(values, label_path, label_value, empty_label_value).astype(np.uint8))
        if empty_label_value is not None:
            background = values == empty_label_value
    label = sparse_label_from_mask(image, liver, label_value=1, background_mask=background, dense=dense)
    if every_k > 1:
        label = label.keep_every_k(every_k)
    return TrainingCase(name, image, label)


def check_setting_types(settings: dict[str, Any]) -> None:
    """Refuse a training setting of the wrong type (``"epochs": "many"``) or a number that is not
    finite, in one line, before TrainConfig would fail on it with a Python error."""
    kinds = {f.name: str(f.type) for f in fields(TrainConfig)}
    for key, value in settings.items():
        kind = kinds.get(key)
        if kind is None or (value is None and kind.startswith("Optional")):
            continue  # unknown keys are named by TrainConfig.from_dict
        base = kind.removeprefix("Optional[").rstrip("]")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if base == "int" and not (number and float(value).is_integer()):
            raise LiverUNetError(f"Training setting {key} must be a whole number; got {value!r}.")
        if base == "float" and not (number and math.isfinite(value)):
            raise LiverUNetError(f"Training setting {key} must be a finite number; got {value!r}.")
        if base == "bool" and not isinstance(value, bool):
            raise LiverUNetError(f"Training setting {key} must be true or false; got {value!r}.")
        if base.startswith("tuple") and not (
            isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
        ):
            raise LiverUNetError(f"Training setting {key} must be a list of numbers; got {value!r}.")
        if base == "int":
            settings[key] = int(value)
