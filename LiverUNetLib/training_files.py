"""Training cases from files: an image plus a label image or a Slicer ``.seg.nrrd``.

Shared by the command line and the worker, so both read painted labels the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

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
from .training import TrainingCase


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
