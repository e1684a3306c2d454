"""The worker runner's scheduler inside Slicer: ``qt.QTimer.singleShot`` on the main thread."""

from __future__ import annotations

from typing import Callable

import qt


class QtTimerScheduler:
    """Calls back from Qt's event loop, so job callbacks (and MRML changes) run on the main thread."""

    def callLater(self, milliseconds: int, callback: Callable[[], None]) -> None:
        qt.QTimer.singleShot(int(milliseconds), callback)
