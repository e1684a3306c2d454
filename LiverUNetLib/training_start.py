"""Fine-tuning from a model: its preprocessing for the new images, and the fill's guard, which averages in
the network a run started from only where that network already finds the liver on the painted slices.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from .model_file import LiverModel
from .networks import UNet
from .preprocessing import Modality, PreprocessConfig
from .progress import ProgressCallback, ProgressEvent, Stage, ignore_progress
from .training_checkpoints import validation_dice

if TYPE_CHECKING:
    from .training_sampler import _PreparedCase


def fine_tuning_preprocess(init: LiverModel, modality: Modality) -> PreprocessConfig:
    """The start model's preprocessing for images of ``modality``: a fine-tuned model is a model of the
    images it was tuned on (an MRI model tuned on CT is a CT model, with the CT window)."""
    return replace(init.preprocess, modality=modality)


def start_network_dice(init: LiverModel, run: int, cases: list[_PreparedCase], device: torch.device) -> tuple[UNet, float]:
    """A copy of the network training run ``run`` starts from, and its Dice on the painted (and liver-free)
    slices: the score the fill's guard compares with ``keep_start_min_dice``."""
    net = UNet(init.network_config)
    net.load_state_dict(init.networks[run % len(init.networks)].state_dict())
    dice = validation_dice(net.to(device), cases, init.preprocess.context_slices)
    return net.cpu().eval(), dice


def start_networks_worth_keeping(
    init: LiverModel, runs: int, cases: list[_PreparedCase], min_dice: float, device: torch.device,
    progress: ProgressCallback = ignore_progress,
) -> list[UNet]:
    """Copies of the networks each training run started from (``keep_start_networks``), each only if it
    already finds the liver on the painted slices: a start from another modality would spoil the average."""
    kept = []
    for run in range(runs):
        net, dice = start_network_dice(init, run, cases, device)
        if dice >= min_dice:
            kept.append(net)
            progress(ProgressEvent(Stage.VALIDATING, None,
                                   f"Keeping the starting network (Dice {dice:.3f} on the painted slices), averaged"))
        else:
            progress(ProgressEvent(Stage.VALIDATING, None,
                                   f"Not keeping the starting network: Dice {dice:.3f} on the painted slices, "
                                   f"below {min_dice}; the fine-tuned network alone is used"))
    return kept
