"""What a rerun trusts: one small record per finished case, and the check that its output is complete.

The worker that segments a case writes its mask atomically (staged, read back, renamed), then the case's
record (``<folder>/.liverunet-batch/<case>.json``, also atomic) with the report row, the settings' digest and
the size and modification time of the files it wrote. A rerun skips a case whose output still has that size
and time; an output without a record (a run killed between the two renames, or a mask made some other way)
is read back in full and skipped when complete. One file per case, not one shared journal: workers on other
machines write their own records on the shared file system without locking anything.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import LiverUNetError
from .manifest import BatchCase
from .report import CaseReport, CaseStatus, write_text_atomically

STATE_FOLDER = ".liverunet-batch"


def record_path(folder: Path, case_id: str) -> Path:
    """The record of ``case_id``: a file-system-safe name plus a digest of the id, so ids that differ
    only in characters a file name cannot hold still get their own record."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", case_id)[:80]
    digest = hashlib.blake2b(case_id.encode(), digest_size=4).hexdigest()
    return folder / STATE_FOLDER / f"{safe}-{digest}.json"


def file_stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [int(stat.st_size), int(stat.st_mtime_ns)]


def write_record(folder: Path, case: BatchCase, report: CaseReport, recipe: str) -> None:
    """Record ``case`` as done with ``recipe``: written after its output(s), atomically."""
    files = {str(case.output): file_stamp(case.output)}
    if case.probability_output is not None:
        files[str(case.probability_output)] = file_stamp(case.probability_output)
    payload = {"recipe": recipe, "files": files, "report": report.to_dict()}
    write_text_atomically(record_path(folder, case.case_id), json.dumps(payload, indent=1, allow_nan=False))


def read_record(folder: Path, case_id: str) -> Optional[dict[str, Any]]:
    path = record_path(folder, case_id)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


@dataclass
class Finished:
    """A case found done: its report row, and whether it was made with other settings than this run's."""

    report: CaseReport
    other_recipe: bool = False


def _targets(case: BatchCase) -> list[Path]:
    return [case.output] + ([case.probability_output] if case.probability_output is not None else [])


def finished(folder: Path, case: BatchCase, recipe: str) -> Optional[Finished]:
    """How ``case`` was done, when its output(s) exist and are complete; None when it must be (re)done."""
    targets = _targets(case)
    if not all(t.is_file() for t in targets):
        return None
    record = read_record(folder, case.case_id)
    if record is not None:
        stamps = record["files"]
        try:
            same_files = all(stamps.get(str(t)) == file_stamp(t) for t in targets)
        except OSError:
            same_files = False
        if same_files and isinstance(record.get("report"), dict):
            try:
                report = CaseReport.from_dict(record["report"])
            except (KeyError, TypeError, ValueError):
                report = None
            if report is not None:
                report.status = CaseStatus.DONE_EARLIER
                return Finished(report, other_recipe=record.get("recipe") != recipe)
    return _complete_without_record(case, targets)


def _complete_without_record(case: BatchCase, targets: list[Path]) -> Optional[Finished]:
    """An output this batch has no record of: skipped when it reads back whole (liver volume from the mask),
    else None, so the case is redone and the incomplete file replaced."""
    from ..image_io import verify_written
    from ..mask_files import read_label_volume

    try:
        for target in targets:
            verify_written(target)
        mask = read_label_volume(case.output)
    except (OSError, RuntimeError, LiverUNetError):
        return None
    liver_ml = float(mask.array.astype(bool).sum()) * mask.voxel_volume_ml
    note = ("no record of how this output was made (a run stopped right after writing it, or another tool "
            "wrote it); the liver volume is read from the mask; --overwrite redoes it")
    return Finished(CaseReport(case.case_id, str(case.input), str(case.output), CaseStatus.DONE_EARLIER,
                               liver_ml=liver_ml, warnings=[note],
                               probability_output=str(case.probability_output or "")))


def remove_record(folder: Path, case_id: str) -> None:
    record_path(folder, case_id).unlink(missing_ok=True)
