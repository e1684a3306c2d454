"""The training cases at network resolution and the batches drawn from their painted slices.

``prepare_case`` normalises and resamples a case in plane once, on the training device; ``_SliceSampler``
draws augmented crops of its annotated slices, with their neighbouring slices as 2.5D context, each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from .augmentation import Batch
from .errors import LiverUNetError
from .preprocessing import (
    PreprocessConfig,
    canonical_orientation,
    context_indices,
    in_plane_spacing,
    intensity_statistics,
    mirror_pad,
    network_size,
    normalise,
    resample_slices,
    to_slice_first,
)

if TYPE_CHECKING:
    from .training import TrainConfig, TrainingCase


@dataclass
class _PreparedCase:
    """A case on the training device at network resolution."""

    name: str
    images: torch.Tensor  # (S, H, W) normalised, all slices (neighbours feed 2.5D context)
    masks: torch.Tensor  # (A, M, H, W) float 0/1 for the annotated slices only: the liver, then neighbour organs
    annotated: np.ndarray  # (A,) slice indices
    weights: np.ndarray  # (A,) how often each annotated slice is drawn, relative to the others


def prepare_case(
    case: TrainingCase, preprocess: PreprocessConfig, device: torch.device, neighbour_organs: int = 0
) -> _PreparedCase:
    """Normalise and resample one case in plane; masks are resampled bilinearly and re-thresholded.
    ``neighbour_organs`` > 0 adds one mask channel per organ 1..N of ``case.neighbours``."""
    image = case.image
    image.validate_scalar_3d(f"image of case '{case.name}'")
    label = case.label
    if label.mask.shape != image.array.shape:
        raise LiverUNetError(
            f"Case '{case.name}': the label's shape {label.mask.shape} differs from the image's "
            f"{image.array.shape}. Export the segment with the image as reference geometry."
        )
    if label.annotated_count == 0:
        raise LiverUNetError(f"Case '{case.name}' has no annotated slice. Paint the liver on a few slices.")
    axis = image.slice_axis()
    if label.slice_axis != axis:
        raise LiverUNetError(f"Case '{case.name}': the label's slice axis does not match the image's.")
    stats = intensity_statistics(image.array, preprocess, axis)
    orientation = canonical_orientation(image)  # the same layout inference uses
    slices = torch.from_numpy(np.ascontiguousarray(orientation.apply(to_slice_first(image.array, axis))))
    masks = to_slice_first(label.mask, axis)[label.annotated][:, None]
    if neighbour_organs:
        masks = np.concatenate([masks, neighbour_masks(case, neighbour_organs, axis)], axis=1)
    masks = torch.from_numpy(np.ascontiguousarray(orientation.apply(masks)))
    count, height, width = slices.shape
    size = network_size((height, width), orientation.spacing(in_plane_spacing(image)), preprocess.in_plane_spacing_mm)
    with torch.no_grad():
        images = resample_slices(normalise(slices.to(device), stats)[:, None], size)[:, 0]
        masks = (resample_slices(masks.to(device, torch.float32), size) >= 0.5).float()
    return _PreparedCase(case.name, images.contiguous(), masks.contiguous(), label.annotated.copy(), label.annotated_weights())


def neighbour_masks(case: TrainingCase, organs: int, axis: int) -> np.ndarray:
    """(A, organs, ...) masks of organs 1..``organs`` of ``case.neighbours`` on the annotated slices."""
    if case.neighbours is None:
        raise LiverUNetError(f"Case '{case.name}' has no neighbouring-organ labels, which neighbour_organs="
                             f"{organs} needs. Give every case its organ map, or set neighbour_organs to 0.")
    if case.neighbours.shape != case.label.mask.shape:
        raise LiverUNetError(f"Case '{case.name}': the neighbouring-organ map's shape {case.neighbours.shape} "
                             f"differs from the label's {case.label.mask.shape}.")
    organ_map = to_slice_first(np.asarray(case.neighbours), axis)[case.label.annotated]
    return np.stack([organ_map == organ for organ in range(1, organs + 1)], axis=1)


class _SliceSampler:
    """Draws augmented training batches from annotated slices of several cases."""

    def __init__(
        self, cases: list[_PreparedCase], config: TrainConfig, multiple: int, generator: torch.Generator,
        context: Optional[int] = None,
    ) -> None:
        self.cases = cases
        self.every_slice_each_epoch = config.every_slice_each_epoch
        self.context = config.context_slices if context is None else context
        self.crop = max(multiple, (config.crop_size // multiple) * multiple)
        self.batch_size = config.batch_size
        self.generator = generator
        # the shuffled order, and this process's share of each batch: all of it in one process; under DDP one
        # order generator seeded alike everywhere and every world-th slice from the rank-th (see share)
        self.order_generator, self.rank, self.world = generator, 0, 1
        self.pairs = [(c, a) for c, case in enumerate(cases) for a in range(len(case.annotated))]
        if not self.pairs:
            raise LiverUNetError("No annotated slice in the training cases.")
        weights = np.concatenate([case.weights for case in cases])
        # equal weights keep the shuffled pass over every slice (and the random draws of earlier versions)
        self.weights = None if np.all(weights == weights[0]) else torch.from_numpy(weights / weights.sum())

    def _sample(self, case: _PreparedCase, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        centre = np.array([case.annotated[position]])
        channels = context_indices(centre, case.images.shape[0], self.context)[0]
        image = case.images[torch.from_numpy(channels).to(case.images.device)]
        mask = case.masks[position]
        both = torch.cat([image, mask], 0)
        height, width = both.shape[-2:]
        pad_h, pad_w = max(0, self.crop - height), max(0, self.crop - width)
        if pad_h or pad_w:
            top = int(torch.randint(0, pad_h + 1, (1,), generator=self.generator))
            left = int(torch.randint(0, pad_w + 1, (1,), generator=self.generator))
            both = mirror_pad(both[None], left, pad_w - left, top, pad_h - top)[0]
            height, width = both.shape[-2:]
        top = int(torch.randint(0, height - self.crop + 1, (1,), generator=self.generator))
        left = int(torch.randint(0, width - self.crop + 1, (1,), generator=self.generator))
        both = both[:, top : top + self.crop, left : left + self.crop]
        return both[: len(image)], both[len(image) :]

    def share(self, rank: int, world: int, order: torch.Generator) -> None:
        """Draw the order with ``order`` and keep every ``world``-th slice of each batch from the ``rank``-th:
        the processes of a distributed run split each batch (training_distributed.py)."""
        self.rank, self.world, self.order_generator = rank, world, order

    def samples(self, requested: int) -> int:
        """Slices one epoch draws: ``requested``, or at least every annotated slice once
        (``TrainConfig.every_slice_each_epoch``)."""
        return max(requested, len(self.pairs)) if self.every_slice_each_epoch else requested

    def steps(self, requested: int) -> int:
        """Batches (optimiser steps) one epoch of ``requested`` samples yields."""
        count = self.samples(requested)
        return max(1, count // self.batch_size) if count >= self.batch_size else 1

    def batches(self, samples: int):
        count = self.samples(samples)
        if self.weights is None and count < len(self.pairs):
            # a fresh random subset each epoch: every slice is drawn over the epochs, none twice in one
            order = torch.randperm(len(self.pairs), generator=self.order_generator)[:count]
        elif self.weights is None:
            order = torch.randperm(count, generator=self.order_generator) % len(self.pairs)
        else:
            order = torch.multinomial(self.weights, count, replacement=True, generator=self.order_generator)
        for start in range(0, count - self.batch_size + 1 if count >= self.batch_size else 1, self.batch_size):
            batch = order[start : start + self.batch_size].tolist()
            chosen = batch[self.rank :: self.world] or batch[:1]  # a batch smaller than the processes: one each
            images, masks = zip(*(self._sample(self.cases[self.pairs[i][0]], self.pairs[i][1]) for i in chosen))
            image = torch.stack(images)
            yield Batch(image, torch.stack(masks), torch.ones(len(chosen), device=image.device))
