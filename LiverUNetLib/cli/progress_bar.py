"""The text progress bar of the ``liverunet`` command (plain text, no dependency)."""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Optional, TextIO

from ..progress import ProgressEvent


class ProgressBar:
    """Draws :class:`ProgressEvent` s on a stream: one redrawn line on a terminal, and on a pipe
    or log file one line per stage, epoch or tenth of the work."""

    def __init__(self, stream: Optional[TextIO] = None, enabled: bool = True, width: int = 28) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.prefix = ""
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._drawn = False
        self._last_key: Any = None

    def set_prefix(self, prefix: str) -> None:
        self.finish()
        self.prefix = prefix
        self._last_key = None

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        fraction = event.fraction
        parts = [f"{self.prefix}{event.stage.value:<14}"]
        if fraction is not None:
            fraction = min(max(float(fraction), 0.0), 1.0)
            filled = int(round(fraction * self.width))
            parts.append(f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:3.0f}%")
        if event.folds and event.folds > 1 and event.fold is not None:
            parts.append(f"network {event.fold}/{event.folds}")
        if event.epoch is not None:
            parts.append(f"epoch {event.epoch}/{event.epochs}" if event.epochs else f"epoch {event.epoch}")
        if event.loss is not None:
            parts.append(f"loss {event.loss:.4f}")
        if event.validation_dice is not None:
            parts.append(f"val Dice {event.validation_dice:.3f}")
        if event.eta_seconds is not None and math.isfinite(event.eta_seconds):
            parts.append(f"ETA {duration(event.eta_seconds)}")
        if event.message and event.epoch is None:
            parts.append(event.message)
        line = "  ".join(parts)
        if self._tty:
            columns = terminal_columns()
            self.stream.write("\r" + line[: columns - 1].ljust(min(columns - 1, len(line) + 8)))
            self.stream.flush()
            self._drawn = True
            return
        decile = None if fraction is None else int(fraction * 10)
        key = (event.stage, event.fold, event.epoch, decile if event.epoch is None else None)
        if key != self._last_key:
            self._last_key = key
            self.stream.write(line + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def terminal_columns() -> int:
    try:
        return max(40, os.get_terminal_size(2).columns)
    except OSError:
        return 100


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
