"""Whether a panel's job is running, right whatever order the job reports in.

A job can end inside the call that starts it (its worker could not start: ``onFinished`` runs before
that call returns). A panel that marks itself running after the call would then show "Cancel" with its
inputs disabled for a job that has already ended. :class:`JobRunState` marks the panel running before the
start and clears it in the finish callback, so the last word is always the job's own.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class JobRunState:
    """One panel's job: ``start`` it through a function that takes the finish callback; ``show(running)``
    updates the panel (button text, enabled inputs) and is called with True, then False exactly once."""

    def __init__(self, show: Callable[[bool], None]) -> None:
        self._show = show
        self._job: Optional[Cancellable] = None
        self._token: Optional[object] = None

    @property
    def running(self) -> bool:
        return self._token is not None

    def start(self, startJob: Callable[[Callable[[Any], None]], Optional[Cancellable]],
              onFinished: Callable[[Any], None]) -> Optional[Cancellable]:
        """Show "running", call ``startJob(finished)``; an exception from it shows "not running" and is re-raised."""
        token = object()
        self._token, self._job = token, None
        self._show(True)

        def finished(result: Any) -> None:
            self._end(token)
            onFinished(result)

        try:
            job = startJob(finished)
        except BaseException:
            self._end(token)
            raise
        if self._token is token:  # still running: keep it for cancel()
            self._job = job
        return job

    def cancel(self) -> bool:
        """Ask the running job to stop; False when there is none."""
        if self._job is None:
            return False
        self._job.cancel()
        return True

    def _end(self, token: object) -> None:
        if self._token is token:
            self._token, self._job = None, None
            self._show(False)
