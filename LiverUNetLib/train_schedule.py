"""How long *Train* runs and how fast it learns, by how it starts: from random weights or from a model.

A network trained from random weights needs the cross-validated schedule: 120 epochs at a peak learning rate of
2e-3. One that starts from a model that already segments livers (Slicer's *Train* starts from the shipped model of
the images' modality by default) needs far less. On the three-scan cross-validation (CHAOS MRI, three scans
painted every 5th slice, each fold started from the shipped network that never saw its held-out subjects), 30
epochs at 5e-4 scored Dice 0.900 on new subjects against 0.878 for 120 epochs at 2e-3, in a quarter of the time;
from the CT model, which never saw an MRI, 0.868 against 0.858 for 15 epochs (docs/accuracy_notes.md, *A few
scans*). ``TrainConfig`` leaves ``epochs`` and ``learning_rate`` unset (None) to mean "this schedule"; a value the
user sets always wins. Torch-free, so the Slicer panel can describe the schedule before PyTorch is installed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSchedule:
    """Epochs and peak learning rate (one-cycle) for training from scratch and for fine-tuning."""

    scratch_epochs: int = 120
    scratch_learning_rate: float = 2e-3
    finetune_epochs: int = 30
    finetune_learning_rate: float = 5e-4

    def epochs(self, fine_tune: bool) -> int:
        return self.finetune_epochs if fine_tune else self.scratch_epochs

    def learning_rate(self, fine_tune: bool) -> float:
        return self.finetune_learning_rate if fine_tune else self.scratch_learning_rate

    def describe(self) -> str:
        """One line for a tooltip or a help text."""
        return (f"{self.scratch_epochs} epochs from scratch, {self.finetune_epochs} when starting from a model")


TRAIN_SCHEDULE = TrainSchedule()
