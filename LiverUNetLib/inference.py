"""Whole-volume inference: slices in batches on the best device, back onto the exact input grid.

Slices are taken perpendicular to the superior axis, normalised with the model's statistics (body box or whole volume),
resampled in plane to the model's spacing, padded with mirrored borders (overlap-tile for slices
larger than ``max_tile``), run through every fold network, and the averaged probability is
resampled back to the native slice size, then averaged with the neighbouring slices' before the
threshold. Work goes batch by batch so memory stays bounded; a GPU out-of-memory error halves the batch
and finally falls back to the CPU.
"""

from __future__ import annotations

import copy
import time
import weakref
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from .devices import (
    DeviceChoice,
    autocast_dtype,
    describe_device,
    fast_cpu_math,
    is_out_of_memory,
    resolve_device,
)
from .errors import LiverUNetError
from .model_file import LiverModel, ModelSource, resolve_model_described
from .postprocessing import fill_holes_per_slice, largest_component, smooth_across_slices
from .preprocessing import (
    body_box,
    canonical_orientation,
    context_indices,
    in_plane_spacing,
    intensity_statistics,
    network_size,
    normalise,
    pad_to_multiple,
    declared_modality,
    require_modality_match,
    resample_slices,
    to_slice_first,
)
from .progress import CancelToken, ProgressCallback, ProgressEvent, Stage, ignore_progress
from .quality import QualityEstimate, calibration_of, estimate_quality, measure_uncertainty
from .volume import Volume

TTA_SCALES = (1.0, 0.9, 1.1)
#: Network pixels of context kept around the body box when ``crop_to_body`` is on.
BODY_MARGIN = 16
#: Cropping is skipped unless it removes at least this share of the network's pixels.
BODY_MIN_SAVING = 0.1


@dataclass
class InferenceConfig:
    """How to run a model; nothing here changes what the model learned."""

    device: Union[DeviceChoice, str] = DeviceChoice.AUTO
    batch_size: Optional[int] = None
    tta: bool = False
    # neighbouring slices' probabilities averaged before the threshold (postprocessing.smooth_across_slices)
    slice_smoothing: bool = True
    largest_component: bool = True
    fill_holes: bool = False
    threshold: Optional[float] = None
    return_probability: bool = False
    max_tile: int = 512
    tile_margin: int = 32
    half_precision: bool = True
    allow_modality_mismatch: bool = False
    crop_to_body: bool = False
    # the estimated Dice and least-sure slices (quality.py): sums over the probability map already in memory
    estimate_quality: bool = True


@dataclass
class SegmentationResult:
    mask: Volume
    probability: Optional[Volume]
    device: str
    seconds: float
    warnings: list[str] = field(default_factory=list)
    # which model ran, in words: the shipped model chosen for the image and why, or the model given
    model: str = ""
    # how sure the result is: estimated Dice with its range, the slices to check first (quality.py)
    quality: Optional[QualityEstimate] = None


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class _Predictor:
    """Runs the fold ensemble on batches, with mirrored padding and the OOM fallbacks."""

    def __init__(self, model: LiverModel, config: InferenceConfig, device: torch.device) -> None:
        self.model = model
        self.config = config
        self.device = device
        self.batch_size = config.batch_size or (32 if device.type != "cpu" else 8)
        self.warnings: list[str] = []
        self.multiple = model.network_config.size_multiple
        self._prepare()

    def _prepare(self) -> None:
        """Inference copies of the fold networks (batch norm folded) on the device, channels_last."""
        self.networks = [_inference_network(net, self.device) for net in self.model.networks]
        self.dtype = autocast_dtype(self.device) if self.config.half_precision else None  # GPU choice, or CPU bf16 where native

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean sigmoid probability of all fold networks for a padded batch on the device."""
        dtype = self.dtype
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            total = None
            for net in self.networks:
                p = torch.sigmoid(net(x)[:, :1].float())  # channel 0: the liver
                total = p if total is None else total + p
        return total / len(self.networks)

    def _forward_tiled(self, x: torch.Tensor) -> torch.Tensor:
        """Overlap-tile: windows of ``max_tile`` whose outer ``tile_margin`` pixels are discarded."""
        height, width = x.shape[-2:]
        tile = _round_up(self.config.max_tile, self.multiple)
        margin = min(self.config.tile_margin, tile // 4)
        core = tile - 2 * margin
        pad = (margin, margin + max(0, core - width), margin, margin + max(0, core - height))
        # mirroring needs a pad smaller than the slice: a thin slice wider than a tile replicates instead
        padded = F.pad(x, pad, mode="reflect" if pad[1] < width and pad[3] < height else "replicate")
        out = torch.empty((x.shape[0], 1, height, width), device=x.device)
        rows = list(range(0, max(height - core, 0) + 1, core))
        cols = list(range(0, max(width - core, 0) + 1, core))
        if rows[-1] + core < height:
            rows.append(height - core)
        if cols[-1] + core < width:
            cols.append(width - core)
        for r in rows:
            for c in cols:
                window = padded[..., r : r + tile, c : c + tile]
                p = self._forward(window)
                h, w = min(core, height - r), min(core, width - c)
                out[..., r : r + h, c : c + w] = p[..., margin : margin + h, margin : margin + w]
        return out

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Probability (N, 1, H, W) on the device for network-ready slices (N, C, H, W)."""
        height, width = x.shape[-2:]
        if max(height, width) > self.config.max_tile:
            return self._forward_tiled(x)
        padded = pad_to_multiple(x, self.multiple)
        return self._forward(padded)[..., :height, :width]

    def fall_back_to_cpu(self) -> None:
        self.warnings.append(
            f"The GPU ran out of memory even with single slices; finished on the CPU instead ({self.device})."
        )
        previous = self.device
        self.device = torch.device("cpu")
        self._prepare()
        if previous.type == "cuda":
            torch.cuda.empty_cache()


_INFERENCE_COPIES: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _fold_batch_norm(net: torch.nn.Module) -> torch.nn.Module:
    """An eval copy of ``net`` with each Conv2d+BatchNorm2d pair folded into one convolution
    (same result up to float rounding, one pass over the activations fewer)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(net).eval()
    for module in fused.modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        children = list(module.named_children())
        for (name, conv), (bn_name, bn) in zip(children, children[1:]):
            if (
                type(conv) is torch.nn.Conv2d
                and type(bn) is torch.nn.BatchNorm2d
                and bn.track_running_stats
                and bn.running_mean is not None
            ):
                setattr(module, name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, torch.nn.Identity())
    return fused


def _inference_network(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The folded eval copy of ``net`` on ``device`` (channels_last), cached while ``net``'s weights
    are unchanged, so a warm worker or a batch of files pays for the copy once."""
    key = (str(device), tuple(t._version for t in net.state_dict(keep_vars=True).values()))
    cached = _INFERENCE_COPIES.get(net)
    if cached is not None and cached[0] == key:
        return cached[1]
    fused = _fold_batch_norm(net).to(device, memory_format=torch.channels_last)
    for parameter in fused.parameters():
        parameter.requires_grad_(False)
    _INFERENCE_COPIES[net] = (key, fused)
    return fused


def _network_box(
    box: Optional[tuple[int, int, int, int]],
    native: tuple[int, int],
    size: tuple[int, int],
    multiple: int,
    margin: int,
) -> Optional[tuple[int, int, int, int]]:
    """The body box in network pixels at ``size``, widened by ``margin`` and to multiples of
    ``multiple`` inside the slice; None when it would not save ``BODY_MIN_SAVING`` of the pixels."""
    if box is None:
        return None
    out = []
    for low, high, n_native, n in ((box[0], box[1], native[0], size[0]), (box[2], box[3], native[1], size[1])):
        scale = n / n_native
        start = max(0, int(low * scale) - margin)
        stop = min(n, int(np.ceil(high * scale)) + margin)
        want = _round_up(stop - start, multiple)
        if want >= n:
            start, stop = 0, n
        else:
            extra = want - (stop - start)
            start = max(0, start - extra // 2)
            stop = start + want
            if stop > n:
                stop, start = n, n - want
        out += [start, stop]
    if (out[1] - out[0]) * (out[3] - out[2]) > (1.0 - BODY_MIN_SAVING) * size[0] * size[1]:
        return None
    return out[0], out[1], out[2], out[3]


def _bounding_box(mask: np.ndarray, margin: int = 0) -> Optional[tuple[slice, ...]]:
    """Slices of the smallest box holding every foreground voxel, widened by ``margin``; None if empty."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(max(0, int(hits[0]) - margin), min(mask.shape[axis], int(hits[-1]) + 1 + margin)))
    return tuple(box)


# beyond this the slices the network sees are far from the near-axial ones it learnt (augmentation rotates
# in plane only); the 25-degree oblique axial phantoms of test_inference.py segment as the straight ones
MAX_SLICE_TILT_DEGREES = 30.0


def segment_volume(
    volume: Volume,
    model: ModelSource = None,
    config: Optional[InferenceConfig] = None,
    progress: ProgressCallback = ignore_progress,
    cancel: Optional[CancelToken] = None,
) -> SegmentationResult:
    """Segment the liver in ``volume``; the mask is uint8 0/1 on exactly the input grid."""
    started = time.perf_counter()
    config = config or InferenceConfig()
    cancel = cancel or CancelToken()
    volume.validate_scalar_3d("image")
    liver_model, model_used = resolve_model_described(model, volume)
    preprocess = liver_model.preprocess
    try:
        declared = declared_modality(volume)
    except LiverUNetError as refusal:  # a PET or ultrasound series: only an explicit, allowed mismatch runs
        if not config.allow_modality_mismatch:
            raise
        declared, early = None, [str(refusal)]
    else:
        early = []
    warnings = early + require_modality_match(volume.array, preprocess.modality, config.allow_modality_mismatch,
                                              declared)
    tilt = volume.slice_tilt_degrees()
    if tilt > MAX_SLICE_TILT_DEGREES:
        warnings.append(f"The slices are tilted {tilt:.0f} degrees from axial (no image axis is close to head-foot), "
                        "and the models learnt near-axial slices: check the result, or reformat the scan to axial.")
    device = resolve_device(config.device)
    progress(ProgressEvent(Stage.PREPROCESSING, 0.0, f"Preparing on {describe_device(device)}"))

    axis = volume.slice_axis()
    orientation = canonical_orientation(volume)
    slices = orientation.apply(to_slice_first(volume.array, axis))
    count, height, width = slices.shape
    stats = intensity_statistics(volume.array, preprocess, axis)
    spacing = orientation.spacing(in_plane_spacing(volume))
    scales = TTA_SCALES if config.tta else (1.0,)
    sizes = [
        network_size((height, width), spacing, (preprocess.in_plane_spacing_mm or min(spacing)) * s)
        if preprocess.in_plane_spacing_mm or s != 1.0
        else (height, width)
        for s in scales
    ]
    predictor = _Predictor(liver_model, config, device)
    body = body_box(slices, preprocess, stats) if config.crop_to_body else None
    # the network runs only on the body (plus a margin at its resolution); zeros outside
    boxes = [_network_box(body, (height, width), size, predictor.multiple, BODY_MARGIN) for size in sizes]
    # float32 always: a float16 store would let the mask depend on whether the map was requested
    probability = np.empty((count, height, width), dtype=np.float32)

    with torch.inference_mode(), fast_cpu_math():
        start = 0
        while start < count:
            cancel.check()
            stop = min(count, start + predictor.batch_size)
            index = np.arange(start, stop)
            neighbours = context_indices(index, count, preprocess.context_slices)
            raw = torch.from_numpy(np.ascontiguousarray(slices[neighbours.ravel()]))
            raw = raw.view(len(index), preprocess.in_channels, height, width)
            try:
                x = normalise(raw.to(predictor.device), stats)
                total = torch.zeros((len(index), 1, height, width), device=predictor.device)
                for size, box in zip(sizes, boxes):
                    resampled = resample_slices(x, size)
                    if box is None:
                        p = predictor.predict(resampled)
                    else:
                        r0, r1, c0, c1 = box
                        p = resampled.new_zeros((len(index), 1, *size))
                        p[..., r0:r1, c0:c1] = predictor.predict(resampled[..., r0:r1, c0:c1])
                    total += resample_slices(p, (height, width))
                probability[start:stop] = (total / len(sizes))[:, 0].cpu().numpy()
            except Exception as error:  # noqa: BLE001 - only out-of-memory is handled here
                if not is_out_of_memory(error):
                    raise
                if predictor.device.type == "cuda":
                    torch.cuda.empty_cache()
                if predictor.batch_size > 1:
                    predictor.batch_size //= 2
                elif predictor.device.type != "cpu":
                    predictor.fall_back_to_cpu()
                else:
                    raise LiverUNetError(
                        "Out of memory on the CPU even with single slices. Close other programs or crop "
                        "the volume to the abdomen."
                    ) from None
                continue
            start = stop
            progress(ProgressEvent(Stage.INFERENCE, stop / count, f"{stop}/{count} slices"))

    progress(ProgressEvent(Stage.POSTPROCESSING, 1.0, "Cleaning up the mask"))
    if config.slice_smoothing:
        smooth_across_slices(probability)
    threshold = config.threshold if config.threshold is not None else liver_model.threshold
    mask = probability >= threshold
    # clean-up only inside the mask's bounding box (+1 voxel): the same result, a fraction of the
    # memory and time of labelling the whole volume (docs/benchmarks.md)
    box = _bounding_box(mask, margin=1)
    if box is not None and (config.largest_component or config.fill_holes):
        inner = mask[box]
        if config.largest_component:
            inner = largest_component(inner)
        if config.fill_holes:
            inner = fill_holes_per_slice(inner, 0)
        mask[box] = inner
    quality = None
    if config.estimate_quality:  # the canonical orientation flips only in plane: slice indices are the image's
        quality = estimate_quality(measure_uncertainty(probability, mask), calibration_of(liver_model.card.quality), axis)
    mask_kji = np.ascontiguousarray(np.moveaxis(orientation.undo(mask).astype(np.uint8), 0, axis))
    if not mask_kji.any():
        warnings.append("No liver was found in this image. Check the field of view and the modality.")
    probability_volume = None
    if config.return_probability:
        probability_volume = volume.with_array(np.ascontiguousarray(np.moveaxis(orientation.undo(probability), 0, axis)))
    result_mask = volume.with_array(mask_kji)
    result_mask.metadata["segment"] = "Liver"
    return SegmentationResult(
        result_mask,
        probability_volume,
        describe_device(predictor.device),
        time.perf_counter() - started,
        warnings + predictor.warnings,
        model_used,
        quality,
    )
