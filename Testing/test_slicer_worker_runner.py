"""The worker runner against real subprocesses: events, results, errors, crashes, cancel, cleanup.

No slicer needed: the runner is Qt- and MRML-free. A stand-in worker script (slicer_fake_worker.py)
speaks the protocol without loading torch; test_slicer_logic.py runs the real LiverUNetLib.worker.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

import slicer_harness  # noqa: F401  (puts LiverUNet/ on sys.path)
from LiverUNetSlicerLib.worker_runner import (BlockingScheduler, EventKind, JobStatus, WorkerProcess, parseLine)

FAKE = [sys.executable, str(Path(__file__).with_name("slicer_fake_worker.py"))]


def run(tmp_path: Path, behaviour: str, cancelAfterEvents: int = 0, grace: float = 10.0, timeout: float = 60.0):
    scheduler = BlockingScheduler()
    events, outcomes, seenWorkDir = [], [], []
    workDir = tmp_path / "job"
    holder = {}

    def onEvent(event):
        events.append(event)
        if cancelAfterEvents and len(events) == cancelAfterEvents:
            holder["process"].cancel()

    def onFinished(outcome):
        seenWorkDir.append(workDir.exists())  # still there while the finish handler runs
        outcomes.append(outcome)

    process = WorkerProcess({"kind": "segment", "behaviour": behaviour, "output": str(tmp_path / "out.txt")},
                            workDir, scheduler, onEvent, onFinished, command=FAKE, pollMilliseconds=20,
                            cancelGraceSeconds=grace)
    holder["process"] = process
    process.start()
    scheduler.runUntilIdle(timeout)
    assert len(outcomes) == 1 and seenWorkDir == [True]
    assert not workDir.exists(), "the job's temporary folder must be removed"
    assert not process.running
    return outcomes[0], events, process


def test_successful_job_reports_progress_logs_and_result(tmp_path):
    outcome, events, _ = run(tmp_path, "ok")
    assert outcome.status is JobStatus.SUCCEEDED and outcome.returnCode == 0
    assert outcome.result["warnings"] == ["fake warning"]
    kinds = [e.kind for e in events]
    assert kinds.count(EventKind.PROGRESS) == 2 and kinds[-1] is EventKind.RESULT
    assert events[1].progress.loss == 0.5 and events[1].progress.stage.value == "inference"
    assert any(e.kind is EventKind.LOG and "warning on stderr" in e.text for e in events)


def test_non_protocol_lines_are_log_lines(tmp_path):
    outcome, events, _ = run(tmp_path, "noise")
    assert outcome.status is JobStatus.SUCCEEDED
    assert [e.text for e in events if e.kind is EventKind.LOG] == ["not json at all", '{"json": "but no event"}']


def test_worker_error_message_reaches_the_caller(tmp_path):
    outcome, _, _ = run(tmp_path, "error")
    assert outcome.status is JobStatus.FAILED and outcome.returnCode == 1
    assert outcome.message == "The image is 2D; a 3D volume is needed."


def test_crash_without_error_event_gives_a_clear_message_with_the_last_output(tmp_path):
    outcome, _, _ = run(tmp_path, "crash")
    assert outcome.status is JobStatus.FAILED
    assert "stopped unexpectedly with exit code 7" in outcome.message
    assert "Nothing was changed" in outcome.message and "RuntimeError: boom" in outcome.message


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_killed_worker_mentions_memory(tmp_path):
    outcome, _, _ = run(tmp_path, "killed")
    assert outcome.status is JobStatus.FAILED and "killed by signal 9" in outcome.message
    assert "out of memory" in outcome.message


def test_cancel_stops_the_worker_cleanly(tmp_path):
    started = time.monotonic()
    outcome, events, _ = run(tmp_path, "slow", cancelAfterEvents=3)
    assert outcome.status is JobStatus.CANCELLED and outcome.returnCode == 3
    assert any(e.kind is EventKind.CANCELLED for e in events)
    assert time.monotonic() - started < 10


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_cancel_kills_the_whole_tree_when_the_worker_ignores_it(tmp_path):
    outcome, _, _ = run(tmp_path, "stubborn", cancelAfterEvents=2, grace=0.5)
    assert outcome.status is JobStatus.CANCELLED and outcome.returnCode == -signal.SIGKILL
    child = int((tmp_path / "out.txt").read_text())
    for _ in range(100):  # the grandchild was killed with its group (reaped by init)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"child process {child} survived the cancel")


def test_missing_executable_fails_cleanly(tmp_path):
    scheduler = BlockingScheduler()
    outcomes = []
    process = WorkerProcess({"kind": "segment"}, tmp_path / "job", scheduler, lambda e: None, outcomes.append,
                            command=[str(tmp_path / "no-such-python")])
    process.start()
    scheduler.runUntilIdle(10)
    assert outcomes[0].status is JobStatus.FAILED and "Could not start the worker process" in outcomes[0].message
    assert not (tmp_path / "job").exists()


def test_parse_line():
    assert parseLine('{"event": "progress", "stage": "training", "epoch": 2}\n').progress.epoch == 2
    assert parseLine('{"event": "progress", "stage": "nonsense"}').kind is EventKind.LOG
    assert parseLine('{"event": "cancelled"}').kind is EventKind.CANCELLED
    assert parseLine("[1, 2]").kind is EventKind.LOG
