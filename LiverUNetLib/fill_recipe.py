"""How one painted volume is densified ("Fill from painted slices"): the benchmarked settings, in one place.

``LiverUNetLib.fill.fill_from_painted`` trains with them, and so do the effect, ``liverunet fill`` and the
fill benchmarks (``bench/mri_fill.py`` on CHAOS MRI, ``bench/ct_fill.py`` on CT), which all run that one
function. Torch-free, so the Slicer layer can read it before PyTorch is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

#: Settings that only fine-tuning takes from an override: starting from random weights keeps the recipe's
#: own (longer) schedule, which fine-tuning values would leave untrained.
FINE_TUNING_ONLY = ("epochs", "learning_rate")


@dataclass(frozen=True)
class FillRecipe:
    """Training settings for densifying one volume from its own painted slices.

    The defaults were chosen by measurement (docs/accuracy_notes.md, *The fill's speed*): fine-tuning for 3
    epochs of 256 crops (96 optimiser steps) fills CHAOS MRI painted every 3rd / 5th / 10th liver slice at Dice
    0.936 / 0.933 / 0.924 on the unpainted slices (15 subjects) and the CHAOS CT sample painted every 5th to
    40th at 0.957-0.980, within 0.0012 of 6 epochs on average (every fill within 0.0045), in half the CPU time:
    27-38 CPU seconds per fill on one thread of a 2-core Xeon with AMX, against 51-68 for 6 epochs (two threads:
    docs/benchmarks.md, *Fill from painted slices*).
    """

    # 2 epochs lost 0.004 on CHAOS MRI; a frozen encoder, 96-pixel crops and stopping once the painted slices
    # were fitted did no better than 3 epochs (docs/accuracy_notes.md, *The fill's speed*)
    finetune_epochs: int = 3
    finetune_learning_rate: float = 5e-4  # gentle: the model already knows livers, it learns this scan
    scratch_epochs: int = 20  # only when there is no model to start from
    scratch_learning_rate: float = 2e-3
    samples_per_epoch: int = 256
    # one scan's own contrast is all there is to learn; with appearance augmentation the fill was
    # about 0.01 Dice worse on CHAOS (docs/accuracy_notes.md)
    appearance_augmentation: bool = False
    # the fine-tuned network is averaged with the network it started from: with two or three painted
    # slices fine-tuning alone could forget what the model knew (CHAOS MRI, every 10th slice painted: Dice
    # 0.911 -> 0.924; docs/accuracy_notes.md, *Densifying*)
    keep_start_network: bool = True
    # further TrainConfig fields (a tiny network for tests, a study's variant); they win over the recipe's
    # own, except that epochs and learning rate apply to fine-tuning only (FINE_TUNING_ONLY)
    overrides: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def with_overrides(self, overrides: Mapping[str, Any]) -> "FillRecipe":
        """This recipe with more TrainConfig settings (the effect's "Fill epochs", a test's tiny network)."""
        return replace(self, overrides={**self.overrides, **overrides})

    def train_settings(self, fine_tune: bool) -> dict[str, Any]:
        """``TrainConfig`` fields: one network trained (plus, fine-tuning, the one it started from),
        every painted slice trains, no early stopping."""
        overrides = dict(self.overrides)
        if not fine_tune:
            overrides = {k: v for k, v in overrides.items() if k not in FINE_TUNING_ONLY}
        return {
            "epochs": self.finetune_epochs if fine_tune else self.scratch_epochs,
            "learning_rate": self.finetune_learning_rate if fine_tune else self.scratch_learning_rate,
            "samples_per_epoch": self.samples_per_epoch,
            "appearance_augmentation": self.appearance_augmentation,
            "keep_start_networks": fine_tune and self.keep_start_network,
            "folds": 1,
            "validation_fraction": 0.0,
            "patience": 0,
            **overrides,
        }


FILL_RECIPE = FillRecipe()
