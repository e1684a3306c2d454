"""Segment the liver in many image files with Slicer, without the main window.

Usage (installed extension; add ``--additional-module-paths /path/to/LiverUNet`` for a source tree)::

    Slicer --no-splash --no-main-window --python-script /path/to/LiverUNet/Scripts/segment_batch.py \\
        --output-dir /data/livers [--model my_model.pt] [--device cpu] [--tta] /data/scans/*.nii.gz
    # or the cases of a CSV manifest (columns input[,output][,case_id]):  --manifest cohort.csv

Each input (NIfTI, NRRD, MHA or a DICOM series folder) is segmented as "Segment liver" does and saved as
``<output-dir>/<name>.seg.nrrd`` (a "Liver" segment with the standard name, colour and terminology, on the
input's grid). The whole batch is one job of the module's warm worker process, which keeps torch and the
model loaded from case to case and runs the library's batch (LiverUNetLib.batch): a line per finished case,
``report.csv`` and ``report.json`` in the output folder, and a rerun skips the cases whose output is complete
(``--overwrite`` redoes them). The exit code is 0 when every file worked, 1 otherwise; the failures are
listed at the end. Works the same in ``PythonSlicer``, which is how Testing/test_slicer_logic.py runs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

MODULE_DIR = Path(__file__).resolve().parent.parent
if str(MODULE_DIR) not in sys.path:  # when the module is not on Slicer's module paths
    sys.path.insert(0, str(MODULE_DIR))


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="segment_batch.py", description="Segment the liver in image files.")
    parser.add_argument("inputs", nargs="*", type=Path, help="image files or DICOM series folders")
    parser.add_argument("--output-dir", required=True, type=Path, help="folder for the .seg.nrrd files and the report")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="a CSV file with the cases (columns input, and optionally output and case_id)")
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the shipped model)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps", "gpu"])
    parser.add_argument("--tta", action="store_true", help="test-time augmentation (slower, a little better)")
    parser.add_argument("--overwrite", action="store_true", help="redo the cases whose output is already complete")
    args = parser.parse_args(list(argv))
    if bool(args.inputs) == bool(args.manifest):
        parser.error("give the input files or --manifest CSV (one of them)")
    return args


def outputName(path: Path) -> str:
    from LiverUNetSlicerLib.jobs import fileStem

    return f"{fileStem(path)}.seg.nrrd"


def batchCases(args: argparse.Namespace) -> list[dict[str, str]]:
    """The job's cases: ``<output-dir>/<name>.seg.nrrd`` for each input (a number added where two share a
    name), or the manifest's rows."""
    from LiverUNetSlicerLib.jobs import fileStem

    if args.manifest is not None:
        from LiverUNetLib.batch.manifest import read_manifest

        cases = read_manifest(args.manifest, args.output_dir, ".seg.nrrd")
        return [{"case_id": c.case_id, "input": str(c.input.resolve()), "output": str(c.output.resolve())} for c in cases]
    seen: dict[str, int] = {}
    cases = []
    for source in args.inputs:
        stem = fileStem(source)
        seen[stem] = seen.get(stem, 0) + 1
        name = stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"
        cases.append({"case_id": name, "input": str(source.resolve()),
                      "output": str((args.output_dir / f"{name}.seg.nrrd").resolve())})
    return cases


def runBatch(logic: Any, job: dict, onCase: Callable[[dict, str], None]) -> Any:
    """Run ``job`` on the logic's warm worker and wait; ``onCase(row, message)`` for each finished case.
    Ctrl-C cancels it (the cases finished stay done)."""
    from LiverUNetSlicerLib.jobs import newWorkDir
    from LiverUNetSlicerLib.worker_runner import BlockingScheduler, EventKind

    scheduler, outcomes = BlockingScheduler(), []

    def onEvent(event: Any) -> None:
        if event.kind is EventKind.PROGRESS and event.progress is not None and "case" in event.progress.extra:
            onCase(event.progress.extra["case"], event.progress.message)
        elif event.kind is EventKind.PROGRESS and event.progress is not None and "plan" in event.progress.extra:
            print(event.progress.message, flush=True)  # how many cases, how many done earlier

    handle = logic.warmWorker.job(job, newWorkDir(logic.tempRoot), scheduler, onEvent, outcomes.append)
    handle.start()
    try:
        scheduler.runUntilIdle()
    except KeyboardInterrupt:
        handle.cancel()
        scheduler.runUntilIdle()
        raise
    return outcomes[0]


def main(argv: Sequence[str]) -> int:
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib import LiverUNetLogic
    from LiverUNetSlicerLib.jobs import resolveModelPath
    from LiverUNetSlicerLib.options import toDevice
    from LiverUNetSlicerLib.worker_runner import JobStatus

    args = parseArguments(argv)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        cases = batchCases(args)
        model: Optional[Path] = resolveModelPath(args.model)
        device = toDevice(args.device).value
    except (LiverUNetError, OSError) as error:
        print(f"segment_batch.py: {error}", flush=True)
        return 1
    job = {"kind": "segment_batch", "cases": cases, "output_folder": str(args.output_dir.resolve()),
           "model": str(model) if model else None, "device": device, "tta": args.tta, "overwrite": args.overwrite}
    failures: list[str] = []

    def onCase(row: dict, message: str) -> None:
        prefix = message.split(":", 1)[0]  # "case 3/40 <id>"
        if row.get("status") == "failed":
            failures.append(f"{row['input']}: {row['error']}")
            print(f"{prefix}: {row['input']}: FAILED: {row['error']}", flush=True)
        else:
            print(f"{prefix}: {row['input']} -> {row['output']} (liver {row['liver_ml']:.1f} mL)", flush=True)

    logic = LiverUNetLogic(keepWorkerWarm=True)  # one worker process for all the files
    try:
        outcome = runBatch(logic, job, onCase)
    finally:
        logic.shutdownWorker()
    if outcome.status is not JobStatus.SUCCEEDED:
        print(f"The batch stopped: {outcome.message}", flush=True)
        return 1
    print(f"report: {outcome.result.get('report')}", flush=True)
    if failures:
        print(f"{len(failures)} of {len(cases)} files failed:\n" + "\n".join(failures), flush=True)
    return 1 if failures or outcome.result.get("failed") else 0


def exitWith(code: int) -> None:
    import slicer

    if getattr(slicer, "app", None) is not None:
        slicer.util.exit(code)  # --python-script alone would leave Slicer running
    else:
        sys.exit(code)


if __name__ == "__main__":
    exitWith(main(sys.argv[1:]))
