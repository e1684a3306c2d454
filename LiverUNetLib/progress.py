"""Progress events and cancellation shared by training, inference, the worker and the CLI.

A job reports through a plain callback so that the command line can draw a bar, the worker can
print JSON lines and Slicer can update its panel, all from the same engine code.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Callable, Optional

from .errors import CancelledError


class Stage(str, Enum):
    """What a job is doing; the value is what appears in JSON lines."""

    LOADING = "loading"
    PREPROCESSING = "preprocessing"
    TRAINING = "training"
    VALIDATING = "validating"
    INFERENCE = "inference"
    POSTPROCESSING = "postprocessing"
    WRITING = "writing"
    DONE = "done"


@dataclass
class ProgressEvent:
    """One progress report. ``fraction`` is in [0, 1] for the whole job when known."""

    stage: Stage
    fraction: Optional[float] = None
    message: str = ""
    epoch: Optional[int] = None
    epochs: Optional[int] = None
    # the network being trained, from 1, and how many: k folds x networks per fold, one after another
    fold: Optional[int] = None
    folds: Optional[int] = None
    loss: Optional[float] = None
    validation_dice: Optional[float] = None
    eta_seconds: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stage"] = self.stage.value
        return {k: v for k, v in data.items() if v is not None and v != {}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProgressEvent":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["stage"] = Stage(values["stage"])
        return cls(**values)


ProgressCallback = Callable[[ProgressEvent], None]


def ignore_progress(_event: ProgressEvent) -> None:
    """Default callback: report nothing."""


class CancelToken:
    """A thread-safe flag that long loops poll; ``check()`` raises :class:`CancelledError` once set."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise CancelledError()
