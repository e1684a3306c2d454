"""The batch as one worker job (``{"kind": "segment_batch", ...}``), for Slicer's warm worker.

Slicer's console script (LiverUNet/Scripts/segment_batch.py) hands the whole batch to the warm worker
process, which keeps torch and the model loaded from case to case. The job runs the same plan, records and
report as ``liverunet segment`` (one process), and emits one progress event per finished case whose
``extra`` holds the case's report row (and one before the first, whose ``extra`` holds the plan's counts), so
the caller can say how far it is and what each case gave. A cancel (the job's cancel file) stops between or
inside cases; the cases finished stay done and recorded.

Job fields: ``cases`` (a list of ``{"input", "output", "case_id"}``; output and case_id optional),
``output_folder`` (report and records; default outputs ``<case_id>_liver<format>``), optional ``model``,
``device``, ``tta``, ``format`` (default ``.seg.nrrd``), ``overwrite``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..devices import DeviceChoice
from ..errors import LiverUNetError
from ..image_io import strip_ending
from ..progress import CancelToken, ProgressEvent, Stage
from .manifest import BatchCase
from .report import CaseReport
from .runner import ReportKeeper, RunOptions, plan_batch, run_batch
from .work import BatchSettings

Emit = Callable[[dict], None]


def _cases(job: dict, folder: Path, fmt: str) -> list[BatchCase]:
    specs = job.get("cases")
    if not isinstance(specs, list) or not specs:
        raise LiverUNetError("The batch job lists no case.")
    cases = []
    for number, spec in enumerate(specs, start=1):
        if not isinstance(spec, dict) or not spec.get("input"):
            raise LiverUNetError(f"Case {number} of the batch job has no 'input'.")
        source = Path(os.fspath(spec["input"])).expanduser()
        case_id = str(spec.get("case_id") or strip_ending(source))
        output = Path(os.fspath(spec["output"])).expanduser() if spec.get("output") else folder / f"{case_id}_liver{fmt}"
        cases.append(BatchCase(case_id, source, output))
    return cases


def run_segment_batch(job: dict, emit: Emit, cancel: CancelToken) -> dict:
    folder = Path(os.fspath(job.get("output_folder") or "")).expanduser()
    if not str(job.get("output_folder") or ""):
        raise LiverUNetError("The batch job has no 'output_folder'.")
    cases = _cases(job, folder, str(job.get("format") or ".seg.nrrd"))
    settings = BatchSettings(
        model=Path(job["model"]).expanduser() if job.get("model") else None,
        device=DeviceChoice(job.get("device") or "auto"), tta=bool(job.get("tta", False)),
        allow_modality_mismatch=bool(job.get("allow_modality_mismatch", False)),
    )
    plan = plan_batch(cases, settings, folder, overwrite=bool(job.get("overwrite", False)))
    keeper = ReportKeeper(plan, folder)
    done_before = len(plan.done)
    emit({"event": "progress", **ProgressEvent(
        Stage.LOADING, done_before / len(cases), f"{len(cases)} cases: {done_before} done earlier, {len(plan.todo)} "
        "to segment", extra={"plan": {"cases": len(cases), "done_earlier": done_before, "todo": len(plan.todo)}}).to_dict()})

    def on_case(row: CaseReport, count: int, todo: int) -> None:
        what = f"{row.liver_ml:.1f} mL" if row.succeeded and row.liver_ml is not None else f"failed: {row.error}"
        event = ProgressEvent(Stage.INFERENCE, (done_before + count) / len(cases),
                              f"case {count}/{todo} {row.case_id}: {what}", extra={"case": row.to_dict()})
        emit({"event": "progress", **event.to_dict()})

    rows = run_batch(plan, settings, folder, RunOptions(workers=1), keeper, on_case, cancel=cancel)
    return {
        "event": "result",
        "kind": "segment_batch",
        "report": str(folder / "report.csv"),
        "cases": len(rows),
        "failed": sum(not r.succeeded for r in rows),
        "rows": [r.to_dict() for r in rows],
    }
