"""Training speed for the speed benchmark: slices per second of training, and the time to a validation Dice.

``training_throughput`` times whole epochs of ``train`` (sampling, augmentation, forward, backward, step) and
reports the median epoch after the first; ``bench/bf16_training.py`` calls it to compare float32 with bfloat16.
``time_to_dice`` trains until the validation Dice on held-out CHAOS subjects first reaches a target.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from LiverUNetLib.image_io import read_image

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("LIVERUNET_DATA", REPO_ROOT.parent / "shared" / "data"))
MRI_SUBJECTS = ["3", "5", "13", "15", "19", "20", "21", "22", "31", "32", "34", "36", "37", "38", "39"]


def load_mri_case(subject: str, every_k: int = 1):
    """A CHAOS T2 subject with its manual liver label, painted on every slice or on 1 in ``every_k`` liver slices."""
    from LiverUNetLib.labels import sparse_label_from_mask
    from LiverUNetLib.training import TrainingCase

    image = read_image(DATA_ROOT / "chaos-mr-t2" / "images" / f"image_{subject}.nii.gz")
    label = read_image(DATA_ROOT / "chaos-mr-t2" / "labels" / f"label_{subject}.nii.gz")
    sparse = sparse_label_from_mask(image, label, label_value=1, dense=True)
    if every_k > 1:
        sparse = sparse.keep_every_k(every_k)
    return TrainingCase(subject, image, sparse)


def training_throughput(cases: list, settings: dict[str, Any], epochs: int = 3, samples: int = 64) -> dict[str, float]:
    """Slices per second of training (sampling + augmentation + forward + backward + step),
    from the median epoch time after the first epoch (no validation)."""
    from LiverUNetLib.training import TrainConfig, train

    stamps: list[float] = []

    def progress(event) -> None:
        if getattr(event, "epoch", None):
            stamps.append(time.perf_counter())

    config = TrainConfig(**{**settings, "epochs": epochs, "samples_per_epoch": samples, "validation_fraction": 0.0, "patience": 0})
    with tempfile.TemporaryDirectory(prefix="liverunet-train-") as work:
        start = time.perf_counter()
        train(cases, config, Path(work) / "m.pt", progress=progress, resume=False)
    durations = [b - a for a, b in zip(stamps, stamps[1:])] or [stamps[0] - start]
    per_epoch = statistics.median(durations)
    used = (samples // config.batch_size) * config.batch_size
    return {"slices_per_s": used / per_epoch, "seconds_per_epoch": per_epoch, "batch_size": config.batch_size}


def time_to_dice(cases: list, validation: list, settings: dict[str, Any], target: float = 0.90, budget_s: float = 600.0) -> dict[str, Any]:
    """Wall time from the start of ``train`` until validation Dice first reaches ``target``
    (validation after every epoch on held-out ``validation`` cases); stops there or at the budget."""
    from LiverUNetLib.errors import CancelledError
    from LiverUNetLib.progress import CancelToken
    from LiverUNetLib.training import TrainConfig, train

    cancel = CancelToken()
    history: list[tuple[float, float]] = []
    start = time.perf_counter()

    def progress(event) -> None:
        if getattr(event, "validation_dice", None) is not None:
            history.append((time.perf_counter() - start, float(event.validation_dice)))
            if event.validation_dice >= target or time.perf_counter() - start > budget_s:
                cancel.cancel()

    all_cases = cases + validation
    fraction = len(validation) / len(all_cases)
    config = TrainConfig(**{**settings, "validation_fraction": fraction, "patience": 0, "validate_every": 1})
    with tempfile.TemporaryDirectory(prefix="liverunet-dice-") as work, contextlib.suppress(CancelledError):
        train(all_cases, config, Path(work) / "m.pt", progress=progress, cancel=cancel, resume=False)
    reached = next((t for t, d in history if d >= target), None)
    return {
        "target": target, "seconds": reached, "budget_s": budget_s,
        "best_dice": max((d for _, d in history), default=None), "history": history,
    }
