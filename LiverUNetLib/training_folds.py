"""How the training cases are split (by case, k-fold or one held-out share) and the training runs that follow:
one network per fold, or several per fold from different random starts (``networks_per_fold``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import LiverUNetError

if TYPE_CHECKING:
    from .training import TrainConfig


def split_cases(count: int, config: TrainConfig) -> list[tuple[list[int], list[int]]]:
    """(train, validation) case indices per fold; by case, never by slice."""
    order = np.random.default_rng(config.seed).permutation(count).tolist()
    if config.folds > 1:
        if count < config.folds:
            raise LiverUNetError(
                f"{config.folds}-fold cross-validation needs at least {config.folds} cases; got {count}. "
                "Add cases or lower the number of folds."
            )
        groups = [list(map(int, g)) for g in np.array_split(order, config.folds)]
        return [(sorted(i for g in groups[:k] + groups[k + 1 :] for i in g), sorted(groups[k])) for k in range(config.folds)]
    if count >= config.validation_min_cases and config.validation_fraction > 0:
        held = max(1, int(round(count * config.validation_fraction)))
        return [(sorted(order[held:]), sorted(order[:held]))]
    return [(list(range(count)), [])]


def training_runs(splits: list[tuple[list[int], list[int]]], networks_per_fold: int) -> list[tuple[int, tuple[list[int], list[int]]]]:
    """(fold, split) for every network to train: each fold's networks one after another."""
    return [(fold, split) for fold, split in enumerate(splits) for _ in range(networks_per_fold)]


def _run_name(run: int, fold: int, folds: int, networks_per_fold: int) -> str:
    """'fold 2/5', 'network 2/2' or 'fold 2/5, network 1/2': what the user asked for, in their words."""
    parts = []
    if folds > 1:
        parts.append(f"fold {fold + 1}/{folds}")
    if networks_per_fold > 1:
        parts.append(f"network {run % networks_per_fold + 1}/{networks_per_fold}")
    return ", ".join(parts) or "network 1/1"
