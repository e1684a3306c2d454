"""Which checkpoint a training run keeps, and the resume checkpoint that lets an interrupted run continue.

The best checkpoint by validation Dice is kept and early-stopping patience counted only once the one-cycle
learning rate has come down (``checkpoint_selectable``). After every epoch the run's state is written
atomically beside the output (``<output>.resume``); it is used again only for the same settings, case
names and inputs (``inputs_digest``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .networks import UNet
from .preprocessing import context_indices, pad_to_multiple

if TYPE_CHECKING:
    from .training import TrainingCase
    from .training_sampler import _PreparedCase


WARMUP_FRACTION = 0.1  # the one-cycle schedule's rising phase (OneCycleLR pct_start)


def checkpoint_selectable(steps_done: int, total_steps: int) -> bool:
    """True in the second half of the one-cycle schedule's annealing phase, where its learning rate has
    fallen below half its peak: only there are checkpoints compared and early-stopping patience counted.

    With the checkpoint chosen from any epoch, the product's *Train* stopped three-scan runs at epochs
    22-44 of 120, kept a checkpoint taken near the peak learning rate, and scored far below the same
    training run to its end (0.772 against 0.812 Dice on new CHAOS subjects; docs/accuracy_notes.md, *A few
    scans*)."""
    warmup = WARMUP_FRACTION * total_steps
    return steps_done >= warmup + (total_steps - warmup) / 2


def validation_dice(net: UNet, cases: list[_PreparedCase], context: int, batch_size: int = 16) -> float:
    """Mean over cases of the Dice on their annotated slices, at network resolution, threshold 0.5."""
    net.eval()
    multiple = net.config.size_multiple
    scores = []
    with torch.inference_mode():
        for case in cases:
            intersection = total = 0.0
            for start in range(0, len(case.annotated), batch_size):
                centre = case.annotated[start : start + batch_size]
                channels = context_indices(centre, case.images.shape[0], context)
                x = case.images[torch.from_numpy(channels.ravel()).to(case.images.device)]
                x = x.view(len(centre), 2 * context + 1, *case.images.shape[-2:])
                height, width = x.shape[-2:]
                x = pad_to_multiple(x, multiple).contiguous(memory_format=torch.channels_last)
                prediction = net(x)[..., :height, :width][:, 0] > 0
                target = case.masks[start : start + batch_size, 0] > 0.5
                intersection += float((prediction & target).sum())
                total += float(prediction.sum() + target.sum())
            scores.append(1.0 if total == 0 else 2 * intersection / total)
    net.train()
    return float(np.mean(scores))


def inputs_digest(cases: list[TrainingCase], start: str = "scratch") -> str:
    """Fingerprint of the training images, their geometry and labels and of the model training starts from
    (``start``: its weights' checksum, or "scratch"): a resume checkpoint is used only for the same inputs, so
    a label fixed or a start model changed after an interruption is not silently trained on the old one."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(start.encode())
    for case in cases:
        digest.update(f"{case.name}:{case.label.slice_axis}".encode())
        arrays = [case.image.array, case.image.ijk_to_ras, case.label.mask, case.label.annotated]
        if case.label.sampling_weights is not None:
            arrays.append(case.label.sampling_weights)
        if case.neighbours is not None:
            arrays.append(case.neighbours)
        for array in arrays:
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _resume_path(output: Path) -> Path:
    return output.with_name(output.name + ".resume")


def _atomic_torch_save(payload: Any, path: Path) -> None:
    """Write ``payload`` to ``path`` through a temporary file; a failed write (a full disk) leaves neither a
    partial file nor a changed ``path`` behind, and raises."""
    temporary = path.with_name(path.name + ".part")
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_resume_checkpoint(path: Path, settings: dict[str, Any], case_names: list[str], inputs: str) -> Any:
    """The state saved at ``path`` if it was made with these settings, case names and inputs; else None
    (also when the file is missing or unreadable)."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is simply not resumed
        saved = {}
    if not isinstance(saved, dict):
        return None
    if saved.get("settings") == settings and saved.get("case_names") == case_names and saved.get("inputs") == inputs:
        return saved
    return None
