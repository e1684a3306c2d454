"""A resumable batch: plan which cases are left, run them on one of the engines, keep the report current.

``plan_batch`` skips every case whose output is complete (records.py) and refuses, before any work, a
folder holding masks made with other settings (``--overwrite`` redoes them). ``run_batch`` runs the rest in
this process, in N local worker processes (each with its own torch threads and its own copy of the model,
loaded once), or on Dask (dask_runner.py), and rewrites ``report.csv`` / ``report.json`` as cases finish.
Each finished case has its output and record on disk before it is counted, so a run killed at any moment
loses no finished case, and the rerun does each remaining case once.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from ..errors import LiverUNetError
from ..progress import CancelToken, ProgressCallback, ignore_progress
from .manifest import BatchCase, check_cases
from .records import finished
from .report import CaseReport, CaseStatus, write_reports
from .work import BatchSettings, configure_process, failure_reason, segment_case

#: The report is rewritten at most this often while cases finish (and always at the end).
REPORT_EVERY_SECONDS = 20.0

OnCase = Callable[[CaseReport, int, int], None]  # the finished case's row, cases finished, cases to do


class Engine(str, Enum):
    AUTO = "auto"  # this process for one worker; Dask's LocalCluster when dask is installed, else local processes
    PROCESSES = "processes"  # worker processes on this machine (the standard library's process pool)
    DASK = "dask"  # a Dask cluster: --scheduler ADDRESS, or a LocalCluster of --workers processes


@dataclass
class BatchPlan:
    cases: list[BatchCase]  # every case, in order
    todo: list[BatchCase]
    done: dict[str, CaseReport] = field(default_factory=dict)  # case id -> its row from the run that did it
    recipe: str = ""


@dataclass(frozen=True)
class RunOptions:
    workers: int = 1
    engine: Engine = Engine.AUTO
    scheduler: Optional[str] = None  # a Dask scheduler's address, tcp://HOST:PORT

    def engine_used(self) -> Engine:
        if self.scheduler:
            return Engine.DASK
        if self.engine is not Engine.AUTO:
            return self.engine
        if self.workers == 1:
            return Engine.PROCESSES
        from .dask_runner import dask_available

        return Engine.DASK if dask_available() else Engine.PROCESSES


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_batch(cases: Sequence[BatchCase], settings: BatchSettings, folder: Path, overwrite: bool = False) -> BatchPlan:
    """Which of ``cases`` are left to do; ``folder`` holds the records of finished ones."""
    check_cases(cases)
    recipe = settings.recipe()
    plan = BatchPlan(list(cases), [], {}, recipe)
    others = []
    for case in cases:
        done = None if overwrite else finished(folder, case, recipe)
        if done is None:
            plan.todo.append(case)
        elif done.other_recipe:
            others.append(case.case_id)
        else:
            plan.done[case.case_id] = done.report
    if others:
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise LiverUNetError(
            f"{len(others)} of the outputs ({listed}) were made with another model or other settings. Write into "
            "another output folder, or add --overwrite to redo them."
        )
    return plan


class ReportKeeper:
    """The rows in the cases' order, written to the report files now and then and at the end."""

    def __init__(self, plan: BatchPlan, folder: Path, stem: str = "report", extra_json: Optional[Path] = None,
                 about: Optional[dict[str, Any]] = None) -> None:
        self.order = [c.case_id for c in plan.cases]
        self.rows: dict[str, CaseReport] = {
            c.case_id: CaseReport(c.case_id, str(c.input), str(c.output), CaseStatus.NOT_RUN) for c in plan.cases}
        self.rows.update(plan.done)
        self.folder, self.stem, self.extra_json = folder, stem, extra_json
        self.about = dict(about or {})
        self._written = 0.0

    def add(self, row: CaseReport) -> None:
        self.rows[row.case_id] = row
        if time.monotonic() - self._written > REPORT_EVERY_SECONDS:
            self.write()

    def ordered(self) -> list[CaseReport]:
        return [self.rows[i] for i in self.order]

    def write(self) -> list[Path]:
        self._written = time.monotonic()
        return write_reports(self.ordered(), self.folder, self.stem, self.extra_json, self.about)


def _run_here(todo: Sequence[BatchCase], settings: BatchSettings, folder: Path, recipe: str,
              progress: ProgressCallback, cancel: Optional[CancelToken]) -> Iterator[CaseReport]:
    configure_process(settings.threads)
    for case in todo:
        if cancel is not None:
            cancel.check()
        yield segment_case(case, settings, folder, recipe, progress, cancel)


def _run_processes(todo: Sequence[BatchCase], settings: BatchSettings, folder: Path, recipe: str,
                   workers: int) -> Iterator[CaseReport]:
    """``workers`` spawned processes (spawn: safe with torch's threads, the same on every platform)."""
    threads = settings.threads or max(1, available_cores() // workers)
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=configure_process, initargs=(threads, True),
    ) as pool:
        futures = {pool.submit(segment_case, case, settings, folder, recipe): case for case in todo}
        try:
            for future in concurrent.futures.as_completed(futures):
                yield _row_of(future, futures[future])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _row_of(future: "concurrent.futures.Future[CaseReport]", case: BatchCase) -> CaseReport:
    """The case's row, or a failed row when its worker process died (killed, often for memory)."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001 - a crashed worker fails its case, not the batch
        reason = ("its worker process died (often: out of memory; try fewer --workers)"
                  if isinstance(error, concurrent.futures.process.BrokenProcessPool) else failure_reason(error))
        return CaseReport(case.case_id, str(case.input), str(case.output), CaseStatus.FAILED, error=reason)


def run_batch(plan: BatchPlan, settings: BatchSettings, folder: Path, options: RunOptions, keeper: ReportKeeper,
              on_case: Optional[OnCase] = None, progress: ProgressCallback = ignore_progress,
              cancel: Optional[CancelToken] = None) -> list[CaseReport]:
    """Run the cases ``plan`` left to do; every row in the cases' order. The report is written at the end,
    also when the run is cancelled or interrupted (then the cases not reached are ``not run``)."""
    engine = options.engine_used()
    keeper.about.update({"engine": engine.value, "workers": options.workers, "scheduler": options.scheduler,
                         "threads_per_worker": settings.threads, "recipe": plan.recipe})
    started = time.perf_counter()
    if not plan.todo:
        rows: Iterator[CaseReport] = iter(())
    elif engine is Engine.DASK:
        from .dask_runner import run_on_dask

        rows = run_on_dask(plan.todo, settings, folder, plan.recipe, options.scheduler, options.workers)
    elif options.workers == 1:
        rows = _run_here(plan.todo, settings, folder, plan.recipe, progress, cancel)
    else:
        rows = _run_processes(plan.todo, settings, folder, plan.recipe, options.workers)
    count = 0
    try:
        for row in rows:
            count += 1
            keeper.add(row)
            if on_case is not None:
                on_case(row, count, len(plan.todo))
            if cancel is not None:
                cancel.check()
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()  # stops the engine now (pending cases cancelled), not when the generator is collected
        keeper.about["seconds"] = round(time.perf_counter() - started, 3)
        keeper.write()
    return keeper.ordered()
