"""A warm ``python -m LiverUNetLib.worker --serve`` process for segmentation jobs.

A cold worker spends most of a "Segment liver" click starting up: importing torch, loading the model
and generating kernels (8.0 s against 1.2 s warm on a 2-core CPU, docs/benchmarks.md). A
:class:`WarmWorker` keeps one server process and hands it one job at a time; :meth:`WarmWorker.job`
returns a :class:`WarmJob` that looks to the caller exactly like a
:class:`~.worker_runner.WorkerProcess` (start, poll through the scheduler, cancel, one outcome).

Safety is unchanged: outputs are still written atomically by the worker, a cancel uses the job's
cancel file (the server stays up for the next job), and a server that dies or does not stop within the
grace period is killed and replaced by a fresh one on the next job. Training never runs here: its
memory is returned to the system when its own process ends. The server quits by itself after
``idleSeconds`` without a job (its standard input is closed), so a forgotten logic holds no memory.
"""

from __future__ import annotations

import atexit
import queue
import shutil
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from .worker_runner import (EventKind, JobStatus, Scheduler, WorkerEvent, WorkerOutcome, WorkerProcess, _END,
                            _newProcessGroupArgs, _terminateTree, childEnvironment, crashMessage,
                            defaultPythonExecutable, parseLine, writeCancelFile, writeJobFile)


class _Server:
    """One ``--serve`` process and the thread that queues its output lines."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str]) -> None:
        self.lines: "queue.Queue[object]" = queue.Queue()
        self.process = subprocess.Popen(
            [*command, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=dict(env),
            **_newProcessGroupArgs(),
        )
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None and self.process.stdin is not None and not self.process.stdin.closed

    def send(self, jobPath: Path) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(str(jobPath) + "\n")
        self.process.stdin.flush()

    def closeInput(self) -> None:
        """End of input: an idle server finishes and exits."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except OSError:
            pass

    def kill(self) -> None:
        self.closeInput()
        _terminateTree(self.process, force=True)

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self.lines.put(line)
        finally:
            self.lines.put(_END)


def _killUnlessExited(server: _Server, seconds: float) -> None:
    try:
        server.process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        server.kill()


class WarmWorker:
    """Owns at most one warm server; runs one :class:`WarmJob` at a time (``idle`` says when it can)."""

    def __init__(self, command: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None,
                 idleSeconds: float = 600.0) -> None:
        self._command = list(command) if command else [defaultPythonExecutable(), "-m", "LiverUNetLib.worker"]
        self._env = dict(env) if env is not None else None
        self._idleSeconds = idleSeconds
        self._server: Optional[_Server] = None
        self._current: Optional["WarmJob"] = None
        self._lock = threading.Lock()
        self._idleTimer: Optional[threading.Timer] = None
        atexit.register(self.shutdown)

    @property
    def idle(self) -> bool:
        """True when no job is running, so :meth:`job` may be called."""
        return self._current is None

    @property
    def pid(self) -> Optional[int]:
        """The server's process id while one is running (diagnostics and tests)."""
        server = self._server
        return server.process.pid if server is not None and server.process.poll() is None else None

    def job(self, job: Mapping[str, Any], workDir: Path, scheduler: Scheduler,
            onEvent: Callable[[WorkerEvent], None], onFinished: Callable[[WorkerOutcome], None],
            pollMilliseconds: int = 100, cancelGraceSeconds: float = 10.0) -> "WarmJob":
        if not self.idle:
            raise RuntimeError("The warm worker is busy; start a separate worker process for this job.")
        return WarmJob(self, job, workDir, scheduler, onEvent, onFinished, pollMilliseconds, cancelGraceSeconds)

    def shutdown(self) -> None:
        """Stop the server (module closed, Slicer quitting) without blocking the caller: its input is
        closed, and it is killed if it has not exited a few seconds later."""
        with self._lock:
            self._cancelIdleTimer()
            server, self._server = self._server, None
        if server is not None:
            server.closeInput()
            threading.Thread(target=_killUnlessExited, args=(server, 5.0), daemon=True).start()

    # --- used by WarmJob ------------------------------------------------------------------------
    def _claim(self, job: "WarmJob") -> _Server:
        """The running server (a fresh one if there is none or it died) reserved for ``job``."""
        with self._lock:
            self._cancelIdleTimer()
            if self._server is None or not self._server.alive:
                if self._server is not None:
                    self._server.kill()
                env = childEnvironment(self._env)
                self._server = _Server(self._command, env)
            self._current = job
            return self._server

    def _release(self, job: "WarmJob", serverBroken: bool) -> None:
        with self._lock:
            if self._current is job:
                self._current = None
            if serverBroken and self._server is not None:
                self._server.kill()
                self._server = None
            if self._server is not None and self._idleSeconds > 0:
                self._idleTimer = threading.Timer(self._idleSeconds, self._stopIfIdle)
                self._idleTimer.daemon = True
                self._idleTimer.start()

    def _stopIfIdle(self) -> None:
        with self._lock:
            if self._current is None and self._server is not None:
                self._server.closeInput()
                self._server = None

    def _cancelIdleTimer(self) -> None:
        if self._idleTimer is not None:
            self._idleTimer.cancel()
            self._idleTimer = None


class WarmJob:
    """One job on the warm server, with :class:`~.worker_runner.WorkerProcess`'s interface and promises:
    ``onFinished`` is called exactly once, from :meth:`poll`, while ``workDir`` still exists."""

    def __init__(self, owner: WarmWorker, job: Mapping[str, Any], workDir: Path, scheduler: Scheduler,
                 onEvent: Callable[[WorkerEvent], None], onFinished: Callable[[WorkerOutcome], None],
                 pollMilliseconds: int, cancelGraceSeconds: float) -> None:
        self.job = dict(job)
        self.workDir = Path(workDir)
        self.jobPath = self.workDir / "job.json"
        self._owner = owner
        self._scheduler = scheduler
        self._onEvent = onEvent
        self._onFinished = onFinished
        self._pollMs = pollMilliseconds
        self._grace = cancelGraceSeconds
        self._server: Optional[_Server] = None
        self._tail: deque[str] = deque(maxlen=20)
        self._cancelRequestedAt: Optional[float] = None
        self._started = False
        self._finished = False

    @property
    def running(self) -> bool:
        return self._started and not self._finished

    @property
    def pid(self) -> Optional[int]:
        return self._server.process.pid if self._server is not None else None

    def start(self) -> None:
        self._started = True
        try:
            writeJobFile(self.jobPath, self.job)
        except OSError as error:
            self._finish(WorkerOutcome(JobStatus.FAILED, f"Could not write the worker's job file: {error}."),
                         serverBroken=False)
            return
        for attempt in range(2):  # a server that died while idle is replaced once
            try:
                self._server = self._owner._claim(self)
                self._server.send(self.jobPath)
                break
            except OSError as error:
                self._owner._release(self, serverBroken=True)
                if attempt == 1:
                    self._finish(WorkerOutcome(JobStatus.FAILED, f"Could not start the worker process: {error}."),
                                 serverBroken=True)
                    return
        self._scheduler.callLater(self._pollMs, self.poll)

    def cancel(self) -> None:
        """Ask the job to stop through its cancel file; the server is killed if it does not within the grace."""
        if self._finished or self._cancelRequestedAt is not None:
            return
        self._cancelRequestedAt = time.monotonic()
        writeCancelFile(self.jobPath)

    def poll(self) -> None:
        if self._finished or self._server is None:
            return
        server = self._server
        while True:
            try:
                item = server.lines.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                code = server.process.wait()
                if self._cancelRequestedAt is not None:
                    self._finish(WorkerOutcome(JobStatus.CANCELLED, "Cancelled; nothing was changed.", {}, code), True)
                else:
                    self._finish(WorkerOutcome(JobStatus.FAILED, crashMessage(code, self._tail), {}, code), True)
                return
            event = parseLine(str(item))
            if event.kind is EventKind.LOG:
                if event.text.strip():
                    self._tail.append(event.text)
                    self._onEvent(event)
                continue
            self._onEvent(event)
            outcome = self._terminalOutcome(event)
            if outcome is not None:
                self._finish(outcome, serverBroken=False)
                return
        if self._cancelRequestedAt is not None and time.monotonic() - self._cancelRequestedAt > self._grace:
            server.kill()  # the _END that follows finishes the job as cancelled
        self._scheduler.callLater(self._pollMs, self.poll)

    def _terminalOutcome(self, event: WorkerEvent) -> Optional[WorkerOutcome]:
        if event.kind is EventKind.PROGRESS:
            return None
        # A cancel wins even over a late result: the user asked for nothing to change.
        if event.kind is EventKind.CANCELLED or self._cancelRequestedAt is not None:
            return WorkerOutcome(JobStatus.CANCELLED, "Cancelled; nothing was changed.", {}, None)
        if event.kind is EventKind.RESULT:
            return WorkerOutcome(JobStatus.SUCCEEDED, "", event.data, 0)
        return WorkerOutcome(JobStatus.FAILED, event.text or "The worker reported an error without a message.", {}, 1)

    def _finish(self, outcome: WorkerOutcome, serverBroken: bool) -> None:
        if self._finished:
            return
        self._finished = True
        self._owner._release(self, serverBroken)
        try:
            self._onFinished(outcome)
        finally:
            shutil.rmtree(self.workDir, ignore_errors=True)


def newWorkerJob(job: Mapping[str, Any], workDir: Path, scheduler: Scheduler,
                 onEvent: Callable[[WorkerEvent], None], onFinished: Callable[[WorkerOutcome], None],
                 command: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None,
                 warmWorker: Optional[WarmWorker] = None) -> "WorkerProcess | WarmJob":
    """A job (not yet started) on ``warmWorker`` when one is given and free, else in a fresh process."""
    if warmWorker is not None and warmWorker.idle:
        return warmWorker.job(job, workDir, scheduler, onEvent, onFinished)
    return WorkerProcess(job, workDir, scheduler, onEvent, onFinished, command=command, env=env)
