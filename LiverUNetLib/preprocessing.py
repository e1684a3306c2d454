"""Turning a volume into network input and the network's output back into the volume's grid.

Every choice (modality normalisation, in-plane spacing, 2.5D context) lives in
:class:`PreprocessConfig`, which is stored in the model file so inference repeats training exactly.
Slices are taken perpendicular to the volume's superior axis (``Volume.slice_axis``) and resampled
in plane only; the slice axis is never resampled, so a result maps back onto the input grid exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .errors import LiverUNetError
from .volume import Volume


class Modality(str, Enum):
    MRI = "mri"
    CT = "ct"


class IntensityRegion(str, Enum):
    """Where MRI normalisation statistics are taken.

    VOLUME: every voxel (models written before this option existed). BODY: inside the in-plane body
    box, so air around the patient (a larger field of view, zero padding) does not shift them; padding
    a CHAOS MRI with air to 448x448 dropped a VOLUME model's Dice from 0.92 to 0.62 (docs/benchmarks.md).
    """

    VOLUME = "volume"
    BODY = "body"


@dataclass
class PreprocessConfig:
    """How images are normalised and sampled before the network sees them."""

    modality: Modality = Modality.MRI
    in_plane_spacing_mm: Optional[float] = 2.5
    context_slices: int = 0
    ct_window: tuple[float, float] = (-200.0, 300.0)
    mri_percentiles: tuple[float, float] = (0.5, 99.5)
    intensity_region: IntensityRegion = IntensityRegion.BODY

    @property
    def in_channels(self) -> int:
        return 2 * self.context_slices + 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["modality"] = self.modality.value
        data["ct_window"] = list(self.ct_window)
        data["mri_percentiles"] = list(self.mri_percentiles)
        data["intensity_region"] = self.intensity_region.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessConfig":
        values = dict(data)
        values["modality"] = Modality(values.get("modality", "mri"))
        # files written before the option existed were normalised over the whole volume
        values["intensity_region"] = IntensityRegion(values.get("intensity_region", "volume"))
        for key in ("ct_window", "mri_percentiles"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


def _mri_statistics(voxels: np.ndarray, config: PreprocessConfig) -> tuple[float, float, float, float]:
    sample = voxels.ravel()
    if sample.size > 2_000_000:  # a strided sample gives the same percentiles at a fraction of the cost
        sample = sample[:: sample.size // 2_000_000 + 1]
    sample = sample.astype(np.float32)
    low, high = np.percentile(sample, config.mri_percentiles)
    clipped = np.clip(sample, low, high)
    std = float(clipped.std())
    return float(low), float(high), float(clipped.mean()), std if std > 1e-6 else 1.0


def intensity_statistics(
    array: np.ndarray, config: PreprocessConfig, slice_axis: int = 0
) -> tuple[float, float, float, float]:
    """(clip_low, clip_high, shift, scale) for the whole volume, so every slab is normalised alike."""
    if config.modality is Modality.CT:
        low, high = config.ct_window
        return low, high, (low + high) / 2.0, (high - low) / 2.0
    stats = _mri_statistics(array, config)
    if config.intensity_region is IntensityRegion.VOLUME:
        return stats
    slices = to_slice_first(array, slice_axis)
    box = body_box(slices, config, stats)
    if box is None:
        return stats
    row0, row1, col0, col1 = box
    return _mri_statistics(slices[:, row0:row1, col0:col1], config)


def normalise(slices: torch.Tensor, stats: tuple[float, float, float, float]) -> torch.Tensor:
    low, high, shift, scale = stats
    return (slices.float().clamp_(low, high) - shift) / scale


def to_slice_first(array: np.ndarray, slice_axis: int) -> np.ndarray:
    """View with the slice axis first: (slices, rows, columns)."""
    return np.moveaxis(array, slice_axis, 0)


@dataclass(frozen=True)
class InPlaneOrientation:
    """Flips and a transpose (exact, no resampling) that bring slice-first views to the canonical layout.

    Canonical: columns run toward the patient's left (-R) and rows toward anterior (+A), the layout of
    the CHAOS NIfTI files the shipped model learned from. DICOM series and other converters often
    store rows toward posterior or columns toward the right; without this the network would see a
    mirrored or upside-down abdomen (the liver on the wrong side).
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def apply(self, slices: np.ndarray) -> np.ndarray:
        """Canonical view of (..., rows, columns), e.g. (slices, rows, columns) or (slices, channels, rows,
        columns); a view, no copy."""
        view = slices.swapaxes(-1, -2) if self.transpose else slices
        if self.flip_rows:
            view = view[..., ::-1, :]
        if self.flip_cols:
            view = view[..., ::-1]
        return view

    def undo(self, slices: np.ndarray) -> np.ndarray:
        """Back from the canonical view to the stored layout; a view, no copy."""
        view = slices
        if self.flip_cols:
            view = view[..., ::-1]
        if self.flip_rows:
            view = view[..., ::-1, :]
        return view.swapaxes(-1, -2) if self.transpose else view

    def spacing(self, spacing: tuple[float, float]) -> tuple[float, float]:
        return (spacing[1], spacing[0]) if self.transpose else spacing


def canonical_orientation(volume: Volume) -> InPlaneOrientation:
    """The flips/transpose for ``volume``'s slices (perpendicular to its superior axis)."""
    axis = volume.slice_axis()
    rows_axis, cols_axis = (a for a in range(3) if a != axis)  # numpy axes of the slice-first view
    rows_dir = volume.directions[:, 2 - rows_axis]  # numpy axis n is IJK axis 2 - n
    cols_dir = volume.directions[:, 2 - cols_axis]
    transpose = abs(rows_dir[0]) > abs(cols_dir[0])  # the rows axis runs left-right: swap
    if transpose:
        rows_dir, cols_dir = cols_dir, rows_dir
    return InPlaneOrientation(bool(transpose), flip_rows=bool(rows_dir[1] < 0), flip_cols=bool(cols_dir[0] > 0))


def in_plane_spacing(volume: Volume) -> tuple[float, float]:
    """Spacing (rows, columns) of the slice-first view, in mm."""
    axis = volume.slice_axis()
    spacing = [s for a, s in enumerate(volume.spacing_kji) if a != axis]
    return float(spacing[0]), float(spacing[1])


def network_size(native: tuple[int, int], spacing: tuple[float, float], target: Optional[float]) -> tuple[int, int]:
    """In-plane size after resampling to ``target`` mm (the field of view is kept)."""
    if target is None:
        return native
    return (
        max(8, int(round(native[0] * spacing[0] / target))),
        max(8, int(round(native[1] * spacing[1] / target))),
    )


def resample_slices(batch: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (N, C, H, W) slices to ``size``; the same call with the native size maps back exactly."""
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    if mode == "nearest":
        return F.interpolate(batch, size=size, mode="nearest")
    return F.interpolate(batch, size=size, mode=mode, align_corners=False, antialias=False)


def body_box(
    slices: np.ndarray, config: PreprocessConfig, stats: tuple[float, float, float, float]
) -> Optional[tuple[int, int, int, int]]:
    """In-plane bounding box ``(row0, row1, col0, col1)`` (end exclusive) of the body in slice-first
    ``slices``, from intensities alone, or None when no body is found.

    Body voxels are above -500 HU on CT and above 5 % of the clipped intensity range on MRI (air
    and MR background are darker). A row or column counts as body when at least 1 % of its voxels,
    over all slices, are, so isolated noise and ghosting do not widen the box. Inference runs the
    network only inside this box (plus a margin) and writes zeros outside it.
    """
    if config.modality is Modality.CT:
        threshold = -500.0
    else:
        low, high = stats[0], stats[1]
        threshold = low + 0.05 * (high - low)
    count, height, width = slices.shape
    step = max(1, count // 64)  # a strided subset of slices is plenty for a bounding box
    foreground = slices[::step] > threshold
    rows = np.flatnonzero(foreground.mean(axis=(0, 2)) > 0.01)
    cols = np.flatnonzero(foreground.mean(axis=(0, 1)) > 0.01)
    if rows.size == 0 or cols.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def mirror_pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """Pad (N, C, H, W) with mirrored borders, as the U-Net paper does; slices too thin to mirror
    (padding at least as large as the slice) repeat their edge pixels instead."""
    if left == right == top == bottom == 0:
        return x
    height, width = x.shape[-2:]
    mode = "reflect" if top + bottom < height and left + right < width else "replicate"
    return F.pad(x, (left, right, top, bottom), mode=mode)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Mirror-pad the bottom and right so height and width are multiples of ``multiple``."""
    height, width = x.shape[-2:]
    return mirror_pad(x, 0, (-width) % multiple, 0, (-height) % multiple)


def context_indices(centre: np.ndarray, count: int, context: int) -> np.ndarray:
    """Indices (len(centre), 2*context+1) of each slice and its neighbours, clamped at the ends."""
    offsets = np.arange(-context, context + 1)
    return np.clip(centre[:, None] + offsets[None, :], 0, count - 1)


def intensity_modality(array: np.ndarray) -> tuple[Optional[Modality], str]:
    """CT, MRI or None (neither) from the intensities alone, with the evidence in words.

    CT is in Hounsfield units: air below -500; or a clipped floor, a large share of voxels exactly at one
    minimum between -1100 and -50 (BTCV's copies clip to [-125, 275]); or a fat peak (-130 to -60) beside
    soft tissue (0 to 100). MRI magnitudes are non-negative, apart from small excursions that resampling or
    reconstruction leave (a real abdominal MR reached -47 against a 99th percentile of 658). Anything else
    (a normalised, subtracted or derived map) is neither.
    """
    return _classify(_intensity_sample(array))


def _classify(sample: np.ndarray) -> tuple[Optional[Modality], str]:
    """``intensity_modality`` of a strided sample of the voxels (``_intensity_sample``)."""
    unusable = _unusable_reason(sample)
    return (None, unusable) if unusable is not None else _modality_from_values(sample)


def _modality_from_values(sample: np.ndarray) -> tuple[Optional[Modality], str]:
    """CT, MRI or neither for a sample no model has to refuse outright (``_unusable_reason`` is None)."""
    low, high = float(sample.min()), float(sample.max())
    air = float(np.mean(sample < -500))
    at_floor = float(np.mean(sample == low))
    fat = float(np.mean((sample >= -130) & (sample <= -60)))
    above_fat = float(np.mean((sample > -60) & (sample <= -20)))
    soft_tissue = float(np.mean((sample >= 0) & (sample <= 100)))
    if air > 0.05:
        return Modality.CT, f"{air:.0%} of its voxels are below -500 (air in Hounsfield units)"
    below_fat = float(np.mean(sample < -50))
    if air > 0.01 and below_fat > 0.05:  # a CT cropped close to the liver keeps a little bowel or lung air
        return Modality.CT, (f"{air:.1%} of its voxels are below -500 and {below_fat:.0%} below -50 (air and fat in "
                             "Hounsfield units)")
    if at_floor > 0.05 and -1100 <= low <= -50:
        return Modality.CT, f"{at_floor:.0%} of its voxels sit at {low:g}, a Hounsfield window's floor"
    # fat is a peak: CTs here hold 1.9-23x more voxels in [-130, -60] than in (-60, -20]; noise around 0 about 1x
    if fat > 0.05 and fat > 1.5 * above_fat and soft_tissue > 0.10 and low >= -1100:
        return Modality.CT, f"{fat:.0%} of its voxels lie between -130 and -60 (fat in Hounsfield units)"
    # MRI vendors scale intensities as they like: how far below zero counts as small is relative to the tissue
    p99 = max(float(np.percentile(sample, 99)), 1.0)
    if float(np.percentile(sample, 0.1)) >= -0.1 * p99:
        negatives = float(np.mean(sample < 0))
        return Modality.MRI, ("it has no negative values (MRI magnitudes)" if negatives == 0 else
                              f"its few negative values ({negatives:.1%}, down to {low:.3g}) are small beside its "
                              f"bright tissue ({p99:.4g}), as in resampled MRI magnitudes")
    return None, (f"{float(np.mean(sample < 0)):.0%} of its voxels are negative, between {low:.4g} and {high:.4g}, "
                  "without the air, clipped floor or fat of CT in Hounsfield units")


def _intensity_sample(array: np.ndarray) -> np.ndarray:
    return array.ravel()[:: max(1, array.size // 500_000)].astype(np.float32)


def _unusable_reason(sample: np.ndarray) -> Optional[str]:
    """Why no model should segment this image as it is (a label map, or CT without its rescale), else None."""
    if float(sample.min()) == float(sample.max()):
        return f"every voxel holds the same value ({float(sample.min()):g}): there is nothing to segment"
    values = _label_map_values(sample)
    if values is not None:
        return (f"it holds only {len(values)} distinct whole-number values ({_value_list(values)}), like a label "
                "map or mask, not a scan: give the image itself")
    body = sample[sample > 200]
    unscaled_ct = float(np.mean((body >= 850) & (body <= 1200))) if body.size else 0.0
    if float(np.mean(sample < 0)) < 0.01 and unscaled_ct >= 0.5 and float(sample.max()) >= 1150:
        return (f"{unscaled_ct:.0%} of its tissue lies between 850 and 1200, as CT does when stored without its "
                "rescale intercept (soft tissue near 1024 instead of 0 HU; CHAOS MRI put at most 14 % there): export "
                "it with the rescale applied (Hounsfield units)")
    return None


def _label_map_values(sample: np.ndarray, most: int = 16) -> Optional[np.ndarray]:
    """The values of ``sample`` when it has 2 to ``most`` distinct whole numbers in [0, 255] (a mask or
    label map: 0/1, organ numbers, 0/255), else None. Scans have hundreds of grey values, even BTCV's 8-bit
    copies (256)."""
    def label_like(values: np.ndarray) -> bool:
        return (2 <= values.size <= most and bool(np.all(values == np.round(values)))
                and float(values.min()) >= 0 and float(values.max()) <= 255)

    if not label_like(np.unique(sample[:200_000])):
        return None
    values = np.unique(sample)
    return values if label_like(values) else None


def _value_list(values: np.ndarray) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:6])
    return shown + (", ..." if values.size > 6 else "")


# DICOM Modality values of images no model here is for (OT and SC, "other" and "secondary capture", are also
# what workstations and anonymisers write for re-exported CT and MRI, so they count as undeclared)
NOT_CROSS_SECTIONAL = {"PT", "NM", "US", "CR", "DX", "XA", "RF", "MG", "IO", "PX", "ES", "OP", "XC", "SEG", "SR",
                       "RTSTRUCT", "RTDOSE", "RTPLAN", "RTIMAGE", "ECG", "KO", "PR", "DOC"}


def declared_modality(volume: Volume) -> Optional[Modality]:
    """The modality the DICOM files declared (the reader keeps their Modality tag), or None when they said
    nothing usable. A modality no model here is for (PT, US, NM ...) is refused."""
    declared = str(volume.metadata.get("modality", "")).strip().upper()
    if declared in NOT_CROSS_SECTIONAL:
        raise LiverUNetError(f"This image's DICOM Modality is {declared}: LiverUNet segments CT and MRI only.")
    return {"CT": Modality.CT, "MR": Modality.MRI}.get(declared)


def image_modality(volume: Volume) -> tuple[Modality, str]:
    """The image's modality and why: the DICOM Modality where the reader kept it, else the intensities.
    An image that is neither CT nor MRI is refused rather than guessed."""
    declared = declared_modality(volume)
    if declared is not None:
        return declared, f"its DICOM Modality is {'CT' if declared is Modality.CT else 'MR'}"
    modality, reason = intensity_modality(volume.array)
    if modality is None:
        raise LiverUNetError(
            f"Cannot tell whether this image is CT or MRI: {reason}. Choose the model yourself: --modality ct or "
            "mri, or --model FILE (in Slicer, the shipped CT or MRI model in the model list; Image type for Train).")
    return modality, reason


def check_modality(array: np.ndarray, modality: Modality, declared: Optional[Modality] = None) -> Optional[str]:
    """A plain warning when the image does not fit the model's modality, else None. A DICOM Modality the
    files declared decides; otherwise only positive evidence counts: Hounsfield air, floor or fat against an
    MRI model, no negative value at all against a CT model."""
    sample = _intensity_sample(array)
    unusable = _unusable_reason(sample)
    if unusable is not None:
        return f"This image cannot be segmented as it is: {unusable}."
    if declared is not None:
        if declared is modality:
            return None
        found, reason = declared, "its DICOM Modality says so"
    else:
        found, reason = _modality_from_values(sample)
    if modality is Modality.MRI and found is Modality.CT:
        return (
            f"This image looks like CT ({reason}), but the model was trained on MRI. Its result would be "
            "unreliable: use the shipped CT model (--modality ct, or no model at all; in Slicer the shipped CT "
            "model), paint the liver on a few slices and use Fill from painted slices, or train or fine-tune a model "
            "on a few painted CT scans."
        )
    no_hounsfield = float(np.mean(sample < -50)) < 0.001 and float(sample.min()) > -100
    if modality is Modality.CT and (declared is Modality.MRI or (no_hounsfield and float(sample.max()) < 5000)):
        evidence = reason if declared is not None else "nothing in it lies below -50, where air and fat are in Hounsfield units"
        return (
            f"This image does not look like CT ({evidence}), "
            "but the model was trained on CT. Use the shipped MRI model (--modality mri, or no model at all; in "
            "Slicer the shipped MRI model), or train or fine-tune one on a few painted scans."
        )
    return None


def modality_of_images(volumes: list[Volume]) -> Modality:
    """The modality a set of training images shares (``image_modality`` of each). Mixed sets are an error:
    one model normalises every image the same way."""
    found = [image_modality(volume)[0] for volume in volumes]
    if not found:
        raise LiverUNetError("No training image given to tell CT from MRI.")
    if len(set(found)) > 1:
        raise LiverUNetError(
            "The training images mix CT and MRI intensities; train one model per modality, or set the "
            "modality (image type) explicitly."
        )
    return found[0]


def require_modality_match(array: np.ndarray, modality: Modality, allow_mismatch: bool,
                           declared: Optional[Modality] = None) -> list[str]:
    message = check_modality(array, modality, declared)
    if message is None:
        return []
    if not allow_mismatch:
        raise LiverUNetError(message + " (To run anyway, pass --allow-modality-mismatch.)")
    return [message]
