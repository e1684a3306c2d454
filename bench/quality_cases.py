"""The results the quality estimate is measured on: every held-out subject of both cross-validations, segmented
by the fold network that never saw it, clean and as deliberately hard inputs, plus inputs no network saw.

One record per (data set, subject, input): the per-slice uncertainty ``LiverUNetLib.quality.measure_uncertainty``
gives, the real Dice and the real error per slice (false positives + false negatives). Nothing here fits or
scores the estimate (``bench/quality_scores.py`` does); the records are cached so that is instant to repeat.

Hard inputs (each from the clean scan and its reference, same grid or the same crop of both):

* ``noise``: Gaussian noise, CT sigma 40 HU (a low-dose scan's extra noise), then the scan's own value range
  again; MRI sigma 8 % of the body's 99th percentile, magnitudes kept >= 0;
* ``crop``: a small field of view in plane: the image and reference cut through the liver at its centre of mass
  along the left-right axis, keeping the side with the image centre (half the liver left, cut at the border);
* ``contrast`` (MRI): the body's intensities inverted (p99.5 - value above the background), as a T1-like
  contrast the T2-SPIR model never saw.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from LiverUNetLib.image_io import read_image  # noqa: E402
from LiverUNetLib.inference import InferenceConfig, segment_volume  # noqa: E402
from LiverUNetLib.model_file import LiverModel, load_model  # noqa: E402
from LiverUNetLib.quality import measure_uncertainty  # noqa: E402
from LiverUNetLib.shipped_models import shipped_model_path  # noqa: E402
from LiverUNetLib.volume import Volume  # noqa: E402

SHARED = Path(os.environ.get("LIVERUNET_DATA", ROOT.parent / "shared" / "data"))
CT_NOISE_HU = 40.0
MRI_NOISE_SHARE = 0.08
VARIANTS = {"mri": ("clean", "noise", "crop", "contrast"), "ct": ("clean", "noise", "crop")}


@dataclass
class Subject:
    """One held-out subject: its data set, name, the fold network that never saw it, and its loader."""

    dataset: str  # "mri" (CHAOS T2-SPIR) or "ct" (BTCV)
    name: str
    fold: int
    load: Callable[[], tuple[Volume, Volume]]


def _mri_loader(subject: str) -> Callable[[], tuple[Volume, Volume]]:
    def load() -> tuple[Volume, Volume]:
        folder = SHARED / "chaos-mr-t2"
        image = read_image(folder / "images" / f"image_{subject}.nii.gz")
        label = read_image(folder / "labels" / f"label_{subject}.nii.gz")
        return image, label.with_array((label.array == 1).astype(np.uint8))
    return load


def _ct_loader(subject: str) -> Callable[[], tuple[Volume, Volume]]:
    def load() -> tuple[Volume, Volume]:
        folder = SHARED / "btcv-ct"
        image = read_image(folder / "images" / f"ct_{subject}.nii.gz")
        label = read_image(folder / "labels" / f"label_{subject}.nii.gz")
        return image, label.with_array((label.array == 6).astype(np.uint8))
    return load


def held_out_subjects(datasets: tuple[str, ...] = ("mri", "ct")) -> list[Subject]:
    """Every subject of the MRI and CT cross-validations with the fold that held it out (the split functions
    of bench/accuracy.py and bench/accuracy_ct.py, so the fold network is the one that never saw it)."""
    subjects = []
    if "mri" in datasets:
        from bench.accuracy import SUBJECTS, fold_of

        subjects += [Subject("mri", s, fold_of(s), _mri_loader(s)) for s in SUBJECTS]
    if "ct" in datasets:
        from bench.accuracy_ct import SUBJECTS as CT_SUBJECTS, fold_of as ct_fold_of

        subjects += [Subject("ct", s, ct_fold_of(s), _ct_loader(s)) for s in CT_SUBJECTS]
    return subjects


def fold_network(model: LiverModel, fold: int) -> LiverModel:
    """Fold ``fold``'s network of a shipped cross-validation ensemble, alone, with the model's settings."""
    return LiverModel([model.networks[fold]], model.network_config, model.preprocess, model.card, model.threshold)


def _lr_axis(volume: Volume) -> int:
    """The numpy axis whose direction runs closest to left-right."""
    return int(2 - np.argmax(np.abs(volume.directions[0, :])))


def hard_input(variant: str, image: Volume, liver: Volume, seed: int) -> tuple[Volume, Volume]:
    """``image`` and its reference ``liver`` made hard as ``variant`` says (module docstring)."""
    if variant == "clean":
        return image, liver
    data = image.array.astype(np.float32)
    ct = float(data.min()) < -50
    rng = np.random.default_rng(seed)
    if variant == "noise":
        if ct:
            noisy = data + rng.normal(0.0, CT_NOISE_HU, data.shape).astype(np.float32)
            return image.with_array(np.clip(noisy, data.min(), data.max())), liver
        sigma = MRI_NOISE_SHARE * float(np.percentile(data[data > np.percentile(data, 50)], 99))
        noisy = np.abs(data + rng.normal(0.0, sigma, data.shape).astype(np.float32))
        return image.with_array(noisy), liver
    if variant == "contrast":
        top = float(np.percentile(data, 99.5))
        body = data > 0.05 * top
        return image.with_array(np.where(body, np.clip(top - data, 0, None), 0).astype(np.float32)), liver
    if variant == "crop":
        axis = _lr_axis(image)
        cut = int(round(np.argwhere(liver.array > 0)[:, axis].mean()))
        centre = image.array.shape[axis] // 2
        keep = slice(cut, None) if centre >= cut else slice(0, cut + 1)
        index: list[Any] = [slice(None)] * 3
        index[axis] = keep
        return _cropped(image, tuple(index)), _cropped(liver, tuple(index))
    raise ValueError(f"unknown hard input {variant!r}")


def _cropped(volume: Volume, index: tuple[slice, ...]) -> Volume:
    """A sub-block of ``volume`` with its origin moved to the block's first voxel."""
    start = np.array([s.start or 0 for s in index][::-1] + [1], dtype=np.float64)  # IJK of the first voxel
    matrix = volume.ijk_to_ras.copy()
    matrix[:3, 3] = (volume.ijk_to_ras @ start)[:3]
    return Volume(np.ascontiguousarray(volume.array[index]), matrix, dict(volume.metadata))


def case_record(image: Volume, liver: Volume, model: LiverModel, config: InferenceConfig) -> dict[str, Any]:
    """Segment ``image`` with ``model`` and record the uncertainty the library measures beside the real errors."""
    return segmented_record(image, liver, model, config)[0]


def segmented_record(image: Volume, liver: Volume, model: LiverModel,
                     config: InferenceConfig) -> tuple[dict[str, Any], np.ndarray]:
    """:func:`case_record` and the mask it scored."""
    result = segment_volume(image, model, config)
    mask = result.mask.array > 0
    reference = liver.array > 0
    axis = image.slice_axis()
    uncertainty = measure_uncertainty(result.probability.array, mask, axis)
    others = tuple(a for a in range(3) if a != axis)
    total = mask.sum() + reference.sum()
    return {
        "dice": float(2 * (mask & reference).sum() / total) if total else 1.0,
        "slice_axis": axis,
        "expected_error": uncertainty.expected_error.tolist(),
        "near_threshold": uncertainty.near_threshold.tolist(),
        "mask_voxels": uncertainty.mask_voxels.tolist(),
        "probability_sum": uncertainty.probability_sum.tolist(),
        "real_error": (mask ^ reference).sum(axis=others).astype(float).tolist(),
        "reference_voxels": reference.sum(axis=others).astype(float).tolist(),
        "seconds": round(result.seconds, 2),
        "warnings": result.warnings,
    }, mask


def collect_held_out(results: Path, datasets: tuple[str, ...] = ("mri", "ct")) -> Iterator[Path]:
    """One JSON per held-out subject (all its inputs), skipped when already there."""
    config = InferenceConfig(device="cpu", return_probability=True, allow_modality_mismatch=True)
    models: dict[str, LiverModel] = {}
    for subject in held_out_subjects(datasets):
        out = results / "cases" / f"{subject.dataset}_{subject.name}.json"
        if out.exists():
            continue
        if subject.dataset not in models:
            models[subject.dataset] = load_model(shipped_model_path(subject.dataset))
        network = fold_network(models[subject.dataset], subject.fold)
        image, liver = subject.load()
        records = {}
        for number, variant in enumerate(VARIANTS[subject.dataset]):
            hard_image, hard_liver = hard_input(variant, image, liver, seed=number)
            records[variant] = case_record(hard_image, hard_liver, network, config)
            print(f"{subject.dataset} {subject.name} (fold {subject.fold}) {variant}: dice {records[variant]['dice']:.4f} "
                  f"expected-error signal {_signal(records[variant]):.4f}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"dataset": subject.dataset, "subject": subject.name, "fold": subject.fold,
                                   "network": f"fold {subject.fold} of the shipped model", "inputs": records}))
        yield out


def _signal(record: dict[str, Any]) -> float:
    total = sum(record["probability_sum"]) + sum(record["mask_voxels"])
    return sum(record["expected_error"]) / total if total else 0.0


def collect_unseen(results: Path) -> Optional[Path]:
    """Inputs no network of the shipped models saw: the CHAOS CT sample (clean, noise, crop) with the CT
    ensemble and each of its fold networks, and the TotalSegmentator CT and MR examples (no manual reference:
    the estimate only). Each network's mask is compared with the ensemble's, the ensemble's disagreement."""
    out = results / "unseen.json"
    if out.exists():
        return None
    config = InferenceConfig(device="cpu", return_probability=True, allow_modality_mismatch=True)
    records: dict[str, Any] = {}
    ct_model = load_model(shipped_model_path("ct"))
    image = read_image(SHARED / "chaos-ct-sample" / "dicom")
    reference = read_image(SHARED / "chaos-ct-sample" / "liver_gt.nii.gz")
    liver = reference.with_array((reference.array > 0).astype(np.uint8))
    for number, variant in enumerate(VARIANTS["ct"]):
        hard_image, hard_liver = hard_input(variant, image, liver, seed=number)
        ensemble, ensemble_mask = segmented_record(hard_image, hard_liver, ct_model, config)
        folds = []
        for fold in range(len(ct_model.networks)):
            single, net_mask = segmented_record(hard_image, hard_liver, fold_network(ct_model, fold), config)
            single["dice_to_ensemble"] = float(2 * (net_mask & ensemble_mask).sum() / (net_mask.sum() + ensemble_mask.sum()))
            folds.append(single)
        ensemble["disagreement"] = float(1 - np.mean([f["dice_to_ensemble"] for f in folds]))
        records[f"chaos_ct_{variant}"] = {"ensemble": ensemble, "folds": folds}
        print(f"CHAOS CT {variant}: ensemble dice {ensemble['dice']:.4f}, disagreement {ensemble['disagreement']:.4f}",
              flush=True)
    for name, dataset in (("example_ct.nii.gz", "ct"), ("example_ct_sm.nii.gz", "ct"), ("example_mr_sm.nii.gz", "mri")):
        volume = read_image(SHARED / "totalsegmentator-examples" / name)
        result = segment_volume(volume, load_model(shipped_model_path(dataset)), config)
        records[f"totalsegmentator_{name.split('.')[0]}"] = {"estimate": result.quality.to_dict(),
                                                             "warnings": result.warnings}
        print(f"TotalSegmentator {name}: {result.quality.summary()}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records))
    return out
