"""Segmenting a cohort: a folder, glob or CSV manifest in, masks and one report table out; resumable, and
parallel in local worker processes or on Dask (optional extra). Slurm job arrays split it with ``Shard``.

The parts: manifest.py (which cases), work.py (one case, as every engine runs it), records.py (what a rerun
trusts), report.py (report.csv / report.json), runner.py (plan and run), dask_runner.py (Dask),
worker_job.py (the batch as one job of Slicer's warm worker).
"""

from .manifest import BatchCase, Shard, cases_from_inputs, read_manifest
from .report import CaseReport, CaseStatus
from .runner import BatchPlan, Engine, ReportKeeper, RunOptions, plan_batch, run_batch
from .work import BatchSettings, segment_case

__all__ = [
    "BatchCase", "BatchPlan", "BatchSettings", "CaseReport", "CaseStatus", "Engine", "ReportKeeper", "RunOptions",
    "Shard", "cases_from_inputs", "plan_batch", "read_manifest", "run_batch", "segment_case",
]
