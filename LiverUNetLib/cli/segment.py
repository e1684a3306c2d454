"""``liverunet segment``: segment the liver in image files, DICOM series, folders of them or a CSV manifest.

One image runs here and writes its mask (and, with ``--report``, a JSON report). A folder, several images or
a manifest is a batch (LiverUNetLib.batch): resumable (a rerun skips the cases whose output is complete),
``report.csv`` and ``report.json`` in the output folder, in this process or ``--workers N`` processes, on a
Dask cluster (``--scheduler``), or one ``--shard I/N`` of it per task of a Slurm job array.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from ..errors import CancelledError, LiverUNetError
from .common import EXIT_OK, EXIT_USER_ERROR, positive_int, warn, warn_reading_notes
from .progress_bar import ProgressBar

ENGINES = ("auto", "processes", "dask")  # batch.Engine's values (not imported here: it imports torch)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this command's options to the ``liverunet`` subcommands."""
    seg = sub.add_parser("segment", parents=[common], help="segment the liver in images",
                         description="Segment the liver. INPUT is an image file, a DICOM series "
                         "folder, a folder of image files or a quoted glob pattern. The output format follows OUT's "
                         "ending (.nii.gz, .nii, .nrrd, .mha, .seg.nrrd); several inputs, a folder of images or "
                         "--manifest need OUT to be a folder, which then also gets report.csv and report.json. "
                         "A rerun of a batch skips the cases whose output is complete.")
    seg.add_argument("inputs", nargs="*", metavar="INPUT")
    seg.add_argument("-o", "--output", required=True, metavar="OUT")
    seg.add_argument("-m", "--model", metavar="FILE",
                     help="model file (default: the shipped CT or MRI model, chosen by each image)")
    seg.add_argument("--modality", choices=["auto", "mri", "ct"], default="auto",
                     help="without --model: use the shipped model of this modality instead of telling it from "
                     "the image (its DICOM Modality, else its intensities)")
    seg.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    seg.add_argument("--tta", action="store_true", help="test-time augmentation (slower, smoother)")
    seg.add_argument("--probability", action="store_true",
                     help="also write the liver probability map next to each mask (<name>_probability)")
    seg.add_argument("--batch-size", type=positive_int, metavar="N", help="slices per batch")
    seg.add_argument("--format", default=".nii.gz", choices=[".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".nii"],
                     help="file format when OUT is a folder (default .nii.gz)")
    seg.add_argument("--no-largest-component", action="store_true",
                     help="keep every connected piece, not only the largest")
    seg.add_argument("--no-slice-smoothing", action="store_true",
                     help="threshold each slice's own probability, without averaging it with its neighbours")
    seg.add_argument("--allow-modality-mismatch", action="store_true",
                     help="run even when the image does not look like the model's modality")
    batch = seg.add_argument_group("batches (docs/cohort.md)")
    batch.add_argument("--manifest", metavar="CSV",
                       help="the cases to segment: a CSV file with a header naming input and optionally output and "
                       "case_id (relative paths from the CSV's folder)")
    batch.add_argument("--workers", type=positive_int, default=1, metavar="N",
                       help="segment N cases at once, each in its own process with its own model copy (default 1)")
    batch.add_argument("--threads-per-worker", type=positive_int, metavar="T",
                       help="torch threads of each worker (default: the cores shared out among the workers)")
    batch.add_argument("--engine", choices=ENGINES, default="auto",
                       help="what runs --workers: a Dask LocalCluster (dask), the standard library's process pool "
                       "(processes); auto takes Dask when it is installed")
    batch.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the cases on the Dask cluster of this scheduler, e.g. tcp://10.0.0.5:8786 "
                       "(pip install -e \".[cluster]\")")
    batch.add_argument("--shard", metavar="I/N",
                       help="segment only shard I of N (0-based) of the cases sorted by id, e.g. "
                       "--shard $SLURM_ARRAY_TASK_ID/10; writes report-shard-I-of-N.csv/.json")
    batch.add_argument("--report", metavar="FILE.json", help="also write the JSON report here (one image or a batch)")
    batch.add_argument("--overwrite", action="store_true",
                       help="redo every case, also those whose output is complete")
    seg.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> Any:
    from ..batch import BatchSettings
    from ..devices import DeviceChoice
    from ..preprocessing import Modality

    return BatchSettings(
        model=Path(args.model).expanduser() if args.model else None,
        modality=None if args.modality == "auto" else Modality(args.modality),
        device=DeviceChoice(args.device), tta=args.tta, probability=args.probability, batch_size=args.batch_size,
        largest_component=not args.no_largest_component, slice_smoothing=not args.no_slice_smoothing,
        allow_modality_mismatch=args.allow_modality_mismatch, threads=args.threads_per_worker,
    )


def _cases(args: argparse.Namespace) -> tuple[list[Any], bool]:
    """The cases and whether they are a batch; every output is checked writable before any work."""
    from ..batch import cases_from_inputs, read_manifest
    from ..image_io import check_output_name, check_output_writable

    if bool(args.inputs) == bool(args.manifest):
        raise LiverUNetError("Give the images to segment (files, folders or a quoted glob) or --manifest CSV, not both "
                             "and not neither.")
    check_output_name(args.output)  # before anything stats it (a stat fails on a name too long)
    output = Path(args.output).expanduser()
    if args.manifest:
        if output.exists() and not output.is_dir():
            raise LiverUNetError(f"--manifest needs --output to be a folder (for the report), not the file {output.name}.")
        cases, batch = read_manifest(Path(args.manifest), output, args.format, args.probability), True
    else:
        cases, batch = cases_from_inputs(args.inputs, output, args.format, args.probability)
    checked: set[Path] = set()
    for case in cases:
        for target in filter(None, (case.output, case.probability_output)):
            check_output_name(target)
            if target.parent not in checked:
                check_output_writable(target)
                checked.add(target.parent)
    return cases, batch


def run(args: argparse.Namespace, bar: ProgressBar) -> int:
    cases, batch = _cases(args)
    if batch:
        return _run_batch(args, bar, cases)
    if args.scheduler or args.shard:
        raise LiverUNetError("--scheduler and --shard split a batch; give a folder, several images or --manifest.")
    return _run_one(args, bar, cases[0])


def _run_one(args: argparse.Namespace, bar: ProgressBar, case: Any) -> int:
    """One image, here; its errors end the command with one line."""
    from ..image_io import read_image, write_image
    from ..inference import segment_volume
    from ..model_file import choose_shipped_model, load_model
    from ..segmentation_file import write_liver_mask

    name, source, target = case.name, case.input, case.output
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise LiverUNetError(f"The output {target} is the input image; choose another --output.")
    settings = _settings(args)
    volume = read_image(source)
    warn_reading_notes(name, volume)
    if args.model is not None:
        model, model_used = load_model(args.model), f"the model {args.model}"
    else:  # the shipped model of the image's modality (or of --modality)
        choice = choose_shipped_model(volume, settings.modality)
        model, model_used = load_model(choice.path), choice.describe()
        print(f"{name}: using {model_used}", file=sys.stderr)
    result = segment_volume(volume, model, settings.inference_config(), progress=bar)
    bar.finish()
    write_liver_mask(result.mask, target)
    written = [str(target)]
    if case.probability_output is not None and result.probability is not None:
        write_image(result.probability, case.probability_output)
        written.append(str(case.probability_output))
    for warning in result.warnings:
        warn(f"{name}: {warning}")
    liver_ml = float(result.mask.array.astype(bool).sum()) * result.mask.voxel_volume_ml
    print(f"{name}: wrote {', '.join(written)} (liver {liver_ml:.1f} mL, {result.device}, {result.seconds:.1f} s)")
    if result.quality is not None:
        print(f"{name}: {result.quality.summary()}")
    if args.report:
        _report_one(args, case, result, liver_ml, model_used)
    return EXIT_OK


def _report_one(args: argparse.Namespace, case: Any, result: Any, liver_ml: float, model_used: str) -> None:
    from ..batch.report import CaseReport, CaseStatus, json_text, write_text_atomically

    quality = getattr(result, "quality", None)
    row = CaseReport(case.case_id, str(case.input), str(case.output), CaseStatus.DONE, liver_ml, model_used,
                     result.device, result.seconds, list(result.warnings), "",
                     dict(quality.to_dict()) if quality is not None else {}, str(case.probability_output or ""))
    write_text_atomically(Path(args.report).expanduser(), json_text([row]))


def _run_batch(args: argparse.Namespace, bar: ProgressBar, cases: list[Any]) -> int:
    from ..batch import Engine, ReportKeeper, RunOptions, Shard, plan_batch, run_batch
    from ..batch.dask_runner import require_dask

    folder = Path(args.output).expanduser()
    options = RunOptions(args.workers, Engine(args.engine), args.scheduler)
    if options.engine_used() is Engine.DASK:
        require_dask()
    shard: Optional[Shard] = Shard.parse(args.shard) if args.shard else None
    total = len(cases)
    if shard is not None:
        cases = shard.select(cases)
        print(f"{shard.label()}: {len(cases)} of {total} cases", file=sys.stderr)
    settings = _settings(args)
    plan = plan_batch(cases, settings, folder, overwrite=args.overwrite)
    stem = "report" if shard is None else f"report-shard-{shard.index}-of-{shard.count}"
    keeper = ReportKeeper(plan, folder, stem, Path(args.report).expanduser() if args.report else None,
                          {"shard": None if shard is None else f"{shard.index}/{shard.count}"})
    if plan.done:
        print(f"{len(plan.done)} of {len(cases)} cases were done earlier (their outputs are complete); "
              f"segmenting the other {len(plan.todo)}", file=sys.stderr)
    here = options.workers == 1 and options.engine_used() is not Engine.DASK  # this process, with a progress bar
    if here and len(plan.todo) > 1:
        bar.set_prefix(f"[1/{len(plan.todo)}] ")

    def on_case(row: Any, count: int, todo: int) -> None:
        bar.finish()
        _print_row(row)
        if here and count < todo:
            bar.set_prefix(f"[{count + 1}/{todo}] ")

    try:
        rows = run_batch(plan, settings, folder, options, keeper, on_case, progress=bar if here else _no_progress)
    except (CancelledError, KeyboardInterrupt):
        bar.finish()
        print(f"liverunet: the report lists what was done: {folder / (stem + '.csv')}; run the same command again "
              "to do the rest", file=sys.stderr)
        raise
    bar.set_prefix("")
    print(f"report: {folder / (stem + '.csv')}, {folder / (stem + '.json')}")
    failures = sum(not r.succeeded for r in rows)
    if failures:
        print(f"liverunet: error: {failures} of {len(rows)} images failed (see above).", file=sys.stderr)
        return EXIT_USER_ERROR
    return EXIT_OK


def _no_progress(_event: Any) -> None:
    pass


def _print_row(row: Any) -> None:
    """The lines a finished case gets: the model, its warnings and what it wrote, or why it failed."""
    name = Path(row.input).name or row.case_id
    if not row.succeeded:
        print(f"liverunet: error: {name}: {row.error}", file=sys.stderr)
        return
    if row.model.startswith("the shipped"):
        print(f"{name}: using {row.model}", file=sys.stderr)
    for warning in row.warnings:
        warn(f"{name}: {warning}")
    written = ", ".join(filter(None, (row.output, row.probability_output)))
    seconds = "" if row.seconds is None else f", {row.seconds:.1f} s"
    print(f"{name}: wrote {written} (liver {row.liver_ml:.1f} mL, {row.device or 'device unknown'}{seconds})")
    if row.quality.get("summary"):
        print(f"{name}: {row.quality['summary']}")
