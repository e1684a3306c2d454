"""Run one ``python -m LiverUNetLib.worker JOB.json`` process without blocking the caller.

Qt-free on purpose: a reader thread only puts stdout lines into a queue; everything else (parsing,
callbacks, reading results, MRML) happens in :meth:`WorkerProcess.poll`, which an injected
:class:`Scheduler` calls on the caller's thread. In Slicer that scheduler is a ``qt.QTimer``
(main thread); in batch mode and tests it is :class:`BlockingScheduler`. Cancel asks nicely
(cancel file + SIGTERM to the process group) and kills the whole tree after a grace period.
The job's temporary folder is removed once the finish callback has run.
"""

from __future__ import annotations

import heapq
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

from LiverUNetLib.progress import ProgressEvent

_END = object()  # queued by the reader thread when stdout closes


class Scheduler(Protocol):
    """Calls ``callback`` once, about ``milliseconds`` from now, on the thread that owns the jobs."""

    def callLater(self, milliseconds: int, callback: Callable[[], None]) -> None: ...


class BlockingScheduler:
    """A scheduler for code that may wait: :meth:`runUntilIdle` sleeps and calls until nothing is left."""

    def __init__(self) -> None:
        self._pending: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = 0

    def callLater(self, milliseconds: int, callback: Callable[[], None]) -> None:
        self._counter += 1
        heapq.heappush(self._pending, (time.monotonic() + milliseconds / 1000.0, self._counter, callback))

    def runUntilIdle(self, timeoutSeconds: Optional[float] = None) -> None:
        """Run callbacks as they fall due; raise ``TimeoutError`` past ``timeoutSeconds``."""
        deadline = None if timeoutSeconds is None else time.monotonic() + timeoutSeconds
        while self._pending:
            due, _, callback = heapq.heappop(self._pending)
            wait = due - time.monotonic()
            if deadline is not None and time.monotonic() + max(wait, 0.0) > deadline:
                heapq.heappush(self._pending, (due, 0, callback))
                raise TimeoutError("The worker job did not finish in time.")
            if wait > 0:
                time.sleep(wait)
            callback()


class JobStatus(Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EventKind(Enum):
    PROGRESS = "progress"
    RESULT = "result"
    ERROR = "error"
    CANCELLED = "cancelled"
    LOG = "log"  # any line that is not a protocol event (warnings, tracebacks)


@dataclass
class WorkerEvent:
    kind: EventKind
    data: dict[str, Any]
    progress: Optional[ProgressEvent] = None

    @property
    def text(self) -> str:
        return str(self.data.get("message") or self.data.get("line") or "")


@dataclass
class WorkerOutcome:
    status: JobStatus
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    returnCode: Optional[int] = None


def parseLine(line: str) -> WorkerEvent:
    """One stdout line as an event; anything that is not a JSON protocol object is a LOG line."""
    text = line.rstrip("\r\n")
    try:
        data = json.loads(text)
    except ValueError:
        return WorkerEvent(EventKind.LOG, {"line": text})
    if not isinstance(data, dict) or "event" not in data:
        return WorkerEvent(EventKind.LOG, {"line": text})
    try:
        kind = EventKind(data["event"])
    except ValueError:
        return WorkerEvent(EventKind.LOG, {"line": text})
    progress = None
    if kind is EventKind.PROGRESS:
        try:
            progress = ProgressEvent.from_dict(data)
        except (KeyError, ValueError, TypeError):
            return WorkerEvent(EventKind.LOG, {"line": text})
    return WorkerEvent(kind, data, progress)


def defaultPythonExecutable() -> str:
    """PythonSlicer inside Slicer (it sets up Slicer's Python environment), else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def libraryRoot() -> Path:
    """The folder that holds the ``LiverUNetLib`` package (put on the worker's PYTHONPATH)."""
    import LiverUNetLib

    return Path(LiverUNetLib.__file__).resolve().parent.parent


def childEnvironment(env: Optional[Mapping[str, str]]) -> dict[str, str]:
    """The worker's environment: ``env`` (or this process's) with LiverUNetLib importable and unbuffered output."""
    result = dict(env if env is not None else os.environ)
    root = str(libraryRoot())
    result["PYTHONPATH"] = root + (os.pathsep + result["PYTHONPATH"] if result.get("PYTHONPATH") else "")
    result["PYTHONUNBUFFERED"] = "1"
    result.setdefault("PYTHONIOENCODING", "utf-8")
    return result


def writeJobFile(jobPath: Path, job: Mapping[str, Any]) -> None:
    """The job as the worker reads it (its folder is created)."""
    jobPath.parent.mkdir(parents=True, exist_ok=True)
    jobPath.write_text(json.dumps(dict(job), indent=1), encoding="utf-8")


def writeCancelFile(jobPath: Path) -> None:
    """The worker polls for ``<job>.cancel`` and stops the job, removing its partial outputs."""
    try:
        Path(str(jobPath) + ".cancel").write_text("cancel", encoding="utf-8")
    except OSError:
        pass


def crashMessage(returnCode: int, tail: Sequence[str]) -> str:
    """What to tell the user when the worker ended without a protocol answer."""
    if returnCode < 0:
        how = f"was killed by signal {-returnCode}"
        if -returnCode == getattr(signal, "SIGKILL", 9):
            how += " (often: the computer ran out of memory)"
    elif returnCode == 0:
        how = "ended without reporting a result"
    else:
        how = f"stopped unexpectedly with exit code {returnCode}"
    lines = "\n".join(list(tail)[-8:])
    message = f"The LiverUNet worker process {how}. Nothing was changed."
    if lines:
        message += f"\nLast output:\n{lines}"
    return message


class WorkerProcess:
    """One worker job: start it, poll it through the scheduler, cancel it, get one outcome.

    ``onFinished`` is called exactly once, from :meth:`poll` (so on the scheduler's thread), while
    the job folder still exists; the folder is removed right after it returns.
    """

    def __init__(
        self,
        job: Mapping[str, Any],
        workDir: Path,
        scheduler: Scheduler,
        onEvent: Callable[[WorkerEvent], None],
        onFinished: Callable[[WorkerOutcome], None],
        command: Optional[Sequence[str]] = None,
        env: Optional[Mapping[str, str]] = None,
        pollMilliseconds: int = 100,
        cancelGraceSeconds: float = 10.0,
        removeWorkDir: bool = True,
    ) -> None:
        self.job = dict(job)
        self.workDir = Path(workDir)
        self.jobPath = self.workDir / "job.json"
        self._scheduler = scheduler
        self._onEvent = onEvent
        self._onFinished = onFinished
        self._command = list(command) if command else [defaultPythonExecutable(), "-m", "LiverUNetLib.worker"]
        self._env = dict(env) if env is not None else None
        self._pollMs = pollMilliseconds
        self._grace = cancelGraceSeconds
        self._removeWorkDir = removeWorkDir
        self._queue: "queue.Queue[object]" = queue.Queue()
        self._process: Optional[subprocess.Popen] = None
        self._tail: deque[str] = deque(maxlen=20)
        self._result: Optional[dict[str, Any]] = None
        self._error: Optional[str] = None
        self._cancelledEvent = False
        self._cancelRequestedAt: Optional[float] = None
        self._killed = False
        self._finished = False
        self._streamClosed = False

    # --- public ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._process is not None and not self._finished

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Write the job file and start the process; errors doing either finish the job as FAILED."""
        try:
            writeJobFile(self.jobPath, self.job)
        except OSError as error:
            self._finish(WorkerOutcome(JobStatus.FAILED, f"Could not write the worker's job file: {error}."))
            return
        try:
            self._process = subprocess.Popen(
                [*self._command, str(self.jobPath)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                env=childEnvironment(self._env),
                **_newProcessGroupArgs(),
            )
        except OSError as error:
            self._finish(WorkerOutcome(JobStatus.FAILED, f"Could not start the worker process "
                                                         f"({self._command[0]}): {error}."))
            return
        threading.Thread(target=self._readStdout, args=(self._process,), daemon=True).start()
        self._scheduler.callLater(self._pollMs, self.poll)

    def cancel(self) -> None:
        """Ask the worker to stop (it removes partial outputs); it is killed if it does not stop."""
        if self._finished or self._cancelRequestedAt is not None:
            return
        self._cancelRequestedAt = time.monotonic()
        writeCancelFile(self.jobPath)
        if self._process is not None and self._process.poll() is None:
            _terminateTree(self._process, force=False)

    def poll(self) -> None:
        """Handle queued output; finish when the process has ended. Re-arms itself until then."""
        if self._finished:
            return
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                self._streamClosed = True
                continue
            self._handleLine(str(item))
        process = self._process
        if process is not None and self._streamClosed and process.poll() is not None:
            self._finish(self._outcome(process.returncode))
            return
        if (self._cancelRequestedAt is not None and not self._killed and process is not None
                and time.monotonic() - self._cancelRequestedAt > self._grace and process.poll() is None):
            self._killed = True
            _terminateTree(process, force=True)
        self._scheduler.callLater(self._pollMs, self.poll)

    # --- internals ------------------------------------------------------------------------------
    def _readStdout(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                self._queue.put(line)
        finally:
            self._queue.put(_END)

    def _handleLine(self, line: str) -> None:
        event = parseLine(line)
        if event.kind is EventKind.LOG:
            if not event.text.strip():
                return
            self._tail.append(event.text)
        elif event.kind is EventKind.RESULT:
            self._result = event.data
        elif event.kind is EventKind.ERROR:
            self._error = event.text or "The worker reported an error without a message."
        elif event.kind is EventKind.CANCELLED:
            self._cancelledEvent = True
        self._onEvent(event)

    def _outcome(self, returnCode: int) -> WorkerOutcome:
        # A cancel wins even over a late result: the user asked for nothing to change.
        if self._cancelledEvent or self._cancelRequestedAt is not None:
            return WorkerOutcome(JobStatus.CANCELLED, "Cancelled; nothing was changed.", {}, returnCode)
        if self._result is not None and returnCode == 0:
            return WorkerOutcome(JobStatus.SUCCEEDED, "", self._result, returnCode)
        if self._error is not None:
            return WorkerOutcome(JobStatus.FAILED, self._error, {}, returnCode)
        return WorkerOutcome(JobStatus.FAILED, crashMessage(returnCode, self._tail), {}, returnCode)

    def _finish(self, outcome: WorkerOutcome) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            self._onFinished(outcome)
        finally:
            if self._removeWorkDir:
                shutil.rmtree(self.workDir, ignore_errors=True)


def _newProcessGroupArgs() -> dict[str, Any]:
    """Start the worker as the leader of its own process group, so the whole tree can be stopped."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {"start_new_session": True}


def _terminateTree(process: subprocess.Popen, force: bool) -> None:
    """SIGTERM (or SIGKILL when ``force``) to the worker's process group; taskkill /T on Windows."""
    if process.poll() is not None and not force:
        return
    if os.name == "nt":
        args = ["taskkill", "/PID", str(process.pid), "/T"] + (["/F"] if force else [])
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        return
    try:
        os.killpg(process.pid, signal.SIGKILL if force else signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
