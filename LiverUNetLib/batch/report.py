"""The batch's report table: one row per case, written as ``report.csv`` and ``report.json``.

A cohort study reads its liver volumes from this table, so every case is in it, also the ones that failed
(with the one-line reason) or were done by an earlier run. Both files are written atomically (temporary
file, then rename) and rewritten as the batch goes, so a killed run leaves a readable table; the per-case
records (records.py) are what a rerun trusts, the table is rebuilt from them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import uuid
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Sequence

REPORT_CSV = "report.csv"
REPORT_JSON = "report.json"


class CaseStatus(str, Enum):
    DONE = "done"  # segmented by this run
    DONE_EARLIER = "done earlier"  # its output was complete when this run started, so it was not redone
    FAILED = "failed"
    NOT_RUN = "not run"  # the run was interrupted before this case


@dataclass
class CaseReport:
    """What happened to one case. ``quality`` holds the fields of the segmentation's quality estimate
    (``result.quality.to_dict()``) when the inference gives one."""

    case_id: str
    input: str
    output: str
    status: CaseStatus
    liver_ml: Optional[float] = None
    model: str = ""
    device: str = ""
    seconds: Optional[float] = None
    warnings: list[str] = field(default_factory=list)
    error: str = ""
    quality: dict[str, Any] = field(default_factory=dict)
    probability_output: str = ""
    worker: str = ""  # host:pid of the process that segmented it
    peak_memory_mib: Optional[float] = None  # that process's peak resident memory when the case ended

    @property
    def succeeded(self) -> bool:
        return self.status in (CaseStatus.DONE, CaseStatus.DONE_EARLIER)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CaseReport":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["status"] = CaseStatus(known["status"])
        return cls(**known)

    def flat(self) -> dict[str, Any]:
        """One table row: the quality fields as columns of their own (``quality_<key>`` where a key would
        clash with a report column)."""
        row = self.to_dict()
        quality = row.pop("quality") or {}
        for key, value in quality.items():
            row[f"quality_{key}" if key in row else key] = value
        return row


def summary(rows: Sequence[CaseReport]) -> dict[str, Any]:
    counts = {status.value: sum(r.status is status for r in rows) for status in CaseStatus}
    return {"cases": len(rows), **counts}


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    fixed = list(CaseReport.__dataclass_fields__)
    fixed.remove("quality")
    extra: list[str] = []
    for row in rows:
        extra.extend(k for k in row if k not in fixed and k not in extra)
    # the quality fields after the liver volume, where a reader of the table looks for them
    at = fixed.index("liver_ml") + 1
    return fixed[:at] + extra + fixed[at:]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " | ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy numbers from a quality estimate
        return _json_safe(value.item())
    return value


def csv_text(rows: Sequence[CaseReport]) -> str:
    flat = [r.flat() for r in rows]
    columns = _columns(flat)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in flat:
        writer.writerow([_cell(_json_safe(row.get(c))) for c in columns])
    return buffer.getvalue()


def json_text(rows: Sequence[CaseReport], about: Optional[dict[str, Any]] = None) -> str:
    data = {"summary": {**summary(rows), **(about or {})}, "cases": [r.flat() for r in rows]}
    return json.dumps(_json_safe(data), indent=1, allow_nan=False) + "\n"


def write_text_atomically(path: Path, text: str) -> None:
    """``text`` to ``path`` through a temporary file beside it: a reader never sees half a table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def report_paths(folder: Path, stem: str = "report") -> tuple[Path, Path]:
    return folder / f"{stem}.csv", folder / f"{stem}.json"


def write_reports(rows: Sequence[CaseReport], folder: Path, stem: str = "report", extra_json: Optional[Path] = None,
                  about: Optional[dict[str, Any]] = None) -> list[Path]:
    """``<stem>.csv`` and ``<stem>.json`` in ``folder`` (and the JSON again at ``extra_json``); the paths."""
    csv_path, json_path = report_paths(folder, stem)
    text = json_text(rows, about)
    write_text_atomically(csv_path, csv_text(rows))
    write_text_atomically(json_path, text)
    written = [csv_path, json_path]
    if extra_json is not None and Path(os.path.abspath(extra_json)) != Path(os.path.abspath(json_path)):
        write_text_atomically(Path(extra_json), text)
        written.append(Path(extra_json))
    return written
