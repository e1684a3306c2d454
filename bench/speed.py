"""Speed and memory of the shipped models, side by side with MONAI running the same ensembles.

From the repository root, with ``../shared/data`` present and ``pip install -e ".[bench]"`` (MONAI)::

    python bench/speed.py                       # the shipped MRI and CT models, MONAI beside them
    python bench/speed.py --repeats 5 --write-docs
    python bench/speed.py --model MODEL.pt      # a model of your own in place of the shipped one of its modality

What it measures, in one process, medians of ``--repeats`` runs after one warm-up run:

* end to end (read, segment, write a .nii.gz) with the model loaded, as ``liverunet segment`` and Slicer's warm
  worker run it: the shipped MRI ensemble on a CHAOS T2 subject (256x256xN), the shipped CT ensemble on the CHAOS
  CT sample (512x512x78 DICOM). Ours and MONAI's pipeline (``bench/speed_monai.py``: MONAI transforms, the slices
  stacked with their neighbours, every network through ``sliding_window_inference``, ``MeanEnsembled``,
  ``Invertd``, ``SaveImaged``) run round by round, interleaved, on the same networks and weights; the masks'
  Dice against each other and against the manual label shows they compute the same thing;
* peak RAM (``bench/speed_memory.py``: VmHWM of a fresh ``liverunet segment`` process, and of a fresh process
  running the MONAI pipeline) on both images and on a 512x512x200 CT (the CHAOS CT mirrored along z);
* the ensemble alone (every network over the volume's 2.5D slices, fp32 and, where the CPU has it natively,
  bf16) against its compute bound: the networks' FLOPs over the device's peak, measured with a large matmul;
* with ``--fill``, *Fill from painted slices* end to end as the effect runs it (``bench/speed_fill.py``: the
  worker's fill job from the shipped model) on the CHAOS CT sample and the CHAOS MRI subject, painted on every
  10th liver slice, with the Dice on the unpainted slices;
* with ``--train``, *Train* from three painted scans started from the shipped model of their modality, as Slicer's
  panel runs it (``bench/train_time.py``: the worker's train job, three CHAOS MRI subjects and three BTCV CTs
  painted on every 5th liver slice);
* training throughput (slices/s with augmentation) with the MRI model's architecture (``bench/speed_train.py``);
  with ``--train-to-dice``, the time until validation Dice 0.90 on held-out CHAOS subjects.

The last line printed is ``end-to-end speed-up vs MONAI: <MONAI seconds / our seconds>`` for the MRI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.speed_cases import Case, build_cases, chaos_ct, chaos_mri  # noqa: E402
from bench.speed_fill import FillCase, time_fills  # noqa: E402
from bench.speed_measure import machine_description, measured_peak_flops, model_only, run_end_to_end  # noqa: E402
from bench.speed_memory import Pipeline, peak_ram  # noqa: E402
from bench.speed_monai import MonaiEnsemblePipeline, monai_available  # noqa: E402
from bench.speed_report import format_table, speedup_line, write_docs, write_json  # noqa: E402
from bench.speed_train import MRI_SUBJECTS, load_mri_case, time_to_dice, training_throughput  # noqa: E402,F401
from LiverUNetLib.image_io import read_image  # noqa: E402
from LiverUNetLib.model_file import LiverModel, load_model  # noqa: E402
from LiverUNetLib.preprocessing import Modality  # noqa: E402

Log = Callable[[str], None]


def choose_cases(args: argparse.Namespace, work: Path) -> list[Case]:
    """The shipped models on their data, or ``--model`` in place of the shipped model of its modality (then only
    that modality's images run)."""
    mri_model, ct_model = args.mri_model, args.ct_model
    modalities = {Modality.MRI, Modality.CT}
    if args.model:
        modality = load_model(args.model).preprocess.modality
        modalities = {modality}
        mri_model, ct_model = (args.model, ct_model) if modality is Modality.MRI else (mri_model, args.model)
    mri_image, mri_label = chaos_mri(args.mri_subject)
    ct_image, ct_label = chaos_ct()
    mri = Path(args.mri) if args.mri else mri_image
    ct = Path(args.ct) if args.ct else ct_image
    return build_cases(
        mri if Modality.MRI in modalities else None, Path(mri_model) if mri_model else None,
        ct if Modality.CT in modalities and not args.skip_ct else None, Path(ct_model) if ct_model else None,
        None if args.skip_large_ct else work,
        Path(args.mri_label) if args.mri_label else (None if args.mri else mri_label),
        Path(args.ct_label) if args.ct_label else (None if args.ct else ct_label),
    )


def end_to_end_section(cases: list[Case], models: dict[str, LiverModel], args: argparse.Namespace, work: Path,
                       log: Log) -> dict[str, Any]:
    timed = [c for c in cases if c.timed]
    monai: dict[str, dict[str, Any]] = {}
    if not args.skip_monai and monai_available():
        for c in timed:
            monai[c.name] = {"monai": MonaiEnsemblePipeline(models[c.name], batch_size=args.batch_size)}
            if args.monai_bf16:
                monai[c.name]["monai_bf16"] = MonaiEnsemblePipeline(models[c.name], batch_size=args.batch_size,
                                                                    autocast_dtype=torch.bfloat16)
    log("end to end (ours and MONAI interleaved):")
    return run_end_to_end(timed, models, monai, args.repeats, work, log)


def model_only_section(cases: list[Case], models: dict[str, LiverModel], args: argparse.Namespace,
                       report: dict[str, Any], log: Log) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peaks = {"fp32": measured_peak_flops(torch.float32)}
    if device.type == "cuda" or report["machine"].get("avx512_bf16") or report["machine"].get("amx_bf16"):
        peaks["bf16"] = measured_peak_flops(torch.bfloat16)
    report["peak_flops_measured"] = peaks
    results = {}
    for c in (c for c in cases if c.timed):
        results[c.name] = model_only(read_image(c.source), models[c.name], peaks, args.repeats, args.batch_size, device)
        log(f"  model only {c.name}: " + ", ".join(
            f"{label} {results[c.name][label]['seconds']:.2f} s ({results[c.name][label]['times_bound']:.1f}x the bound)"
            for label in peaks))
    return results


def memory_section(cases: list[Case], args: argparse.Namespace, with_monai: bool, log: Log) -> dict[str, Any]:
    memory: dict[str, Any] = {}
    for c in cases:
        memory[c.name] = {"ours": peak_ram(Pipeline.OURS, c.source, None if c.shipped else c.model_path, args.threads)}
        if with_monai:
            memory[c.name]["monai"] = peak_ram(Pipeline.MONAI, c.source, c.model_path, args.threads)
        log(f"  peak RAM {c.name}: ours {memory[c.name]['ours']['peak_mb']:.0f} MiB"
            + (f", MONAI {memory[c.name]['monai']['peak_mb']:.0f} MiB" if with_monai else ""))
    return memory


def fill_section(args: argparse.Namespace, work: Path, log: Log) -> dict[str, Any]:
    """The fill job on the MRI subject and the CT sample (or ``--mri``/``--ct`` with their labels)."""
    mri_image, mri_label = chaos_mri(args.mri_subject)
    ct_image, ct_label = chaos_ct()
    mri_reference = Path(args.mri_label) if args.mri_label else (None if args.mri else mri_label)
    ct_reference = Path(args.ct_label) if args.ct_label else (None if args.ct else ct_label)
    cases = [FillCase("mri", Path(args.mri) if args.mri else mri_image, mri_reference, 1, args.fill_every_k)]
    if not args.skip_ct:
        cases.append(FillCase("ct", Path(args.ct) if args.ct else ct_image, ct_reference, None, args.fill_every_k))
    cases = [c for c in cases if c.label is not None and c.image.exists() and c.label.exists()]
    log(f"fill from painted slices (1 in {args.fill_every_k} liver slices painted, cases interleaved):")
    folder = work / "fill"
    folder.mkdir(exist_ok=True)
    return time_fills(cases, args.fill_repeats, folder, log)


def train_section(args: argparse.Namespace, log: Log) -> dict[str, Any]:
    """*Train* from three painted scans per modality, started from the shipped model (the panel's job)."""
    from bench.train_time import SUBJECTS, time_train

    records = {}
    for modality in ("mri",) + (() if args.skip_ct else ("ct",)):
        records[modality] = time_train(modality, SUBJECTS[modality], args.train_every_k)
        r = records[modality]
        log(f"  train, {modality}: {r['seconds']:.0f} s ({r['epochs']} epochs, {sum(r['annotated_slices'].values())} "
            f"painted slices)")
    return records


def training_section(model: LiverModel, args: argparse.Namespace, report: dict[str, Any], log: Log) -> None:
    settings = {
        "base_channels": model.network_config.base_channels, "depth": model.network_config.depth,
        "in_plane_spacing_mm": model.preprocess.in_plane_spacing_mm, "context_slices": model.preprocess.context_slices,
        "crop_size": args.crop_size, "batch_size": 8, "device": "auto",
    }
    cases = [load_mri_case(s) for s in MRI_SUBJECTS[:3]]
    report["training"] = {"settings": settings, **training_throughput(cases, settings, samples=args.train_samples)}
    log(f"  training: {report['training']['slices_per_s']:.1f} slices/s")
    if args.train_to_dice:
        held = ["3", "21", "37"]
        train_set = [load_mri_case(s, args.every_k) for s in MRI_SUBJECTS if s not in held]
        report["time_to_dice"] = time_to_dice(
            train_set, [load_mri_case(s) for s in held],
            {**settings, "epochs": args.dice_epochs, "samples_per_epoch": 256}, budget_s=args.dice_budget)
        log(f"  time to validation Dice 0.90: {report['time_to_dice']['seconds']}")


def run_benchmark(args: argparse.Namespace, log: Log = print,
                  checkpoint: Callable[[dict[str, Any]], None] = lambda report: None) -> dict[str, Any]:
    """Every section; ``checkpoint(report)`` after each, so a long run keeps what it measured."""
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="liverunet-speed-"))
    try:
        cases = choose_cases(args, work)
        if not cases:
            raise SystemExit("speed.py: no image with a model to run (is ../shared/data there? set LIVERUNET_DATA)")
        models = {c.name: load_model(c.model_path) for c in cases}
        report: dict[str, Any] = {
            "command": "python bench/speed.py " + " ".join(args.argv),
            "machine": machine_description(),
            "models": {c.name: _describe_model(c, models[c.name]) for c in cases if c.timed},
            "repeats": f"{args.repeats} timed runs per item after one warm-up run; medians; ours and MONAI interleaved",
        }
        log(f"machine: {report['machine']['cpu']}, {report['machine']['cpu_count']} CPUs, torch threads "
            f"{args.threads}, GPU: {report['machine']['gpu'] or 'none'}")
        report["end_to_end"] = end_to_end_section(cases, models, args, work, log)
        checkpoint(report)
        if not args.skip_model_only:
            report["model_only"] = model_only_section(cases, models, args, report, log)
            checkpoint(report)
        if not args.skip_memory:
            report["peak_ram_mb"] = memory_section(cases, args, not args.skip_monai and monai_available(), log)
            checkpoint(report)
        if args.fill:
            report["fill"] = fill_section(args, work, log)
            checkpoint(report)
        if args.train:
            report["train"] = train_section(args, log)
            checkpoint(report)
        mri = next((c for c in cases if c.modality is Modality.MRI), None)
        if not args.skip_training and mri is not None:
            training_section(models[mri.name], args, report, log)
            checkpoint(report)
        report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _describe_model(case: Case, model: LiverModel) -> dict[str, Any]:
    path = case.model_path.resolve()
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    return {"path": str(shown), "shipped": case.shipped, "networks": len(model.networks),
            "base_channels": model.network_config.base_channels, "depth": model.network_config.depth,
            "in_plane_spacing_mm": model.preprocess.in_plane_spacing_mm, "in_channels": model.preprocess.in_channels}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model file run in place of the shipped model of its modality (only that "
                                        "modality's images run)")
    parser.add_argument("--mri-model", help="the MRI model (default: the shipped one)")
    parser.add_argument("--ct-model", help="the CT model (default: the shipped one)")
    parser.add_argument("--mri-subject", default="3", help="CHAOS T2 subject for the MRI (default 3)")
    parser.add_argument("--mri", help="an MRI image in place of the CHAOS subject")
    parser.add_argument("--mri-label", help="its liver label (value 1), for the masks' Dice")
    parser.add_argument("--ct", help="a CT image or DICOM folder in place of the CHAOS CT sample")
    parser.add_argument("--ct-label", help="its liver label (non-zero), for the masks' Dice")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per item (median reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (model only, MONAI)")
    parser.add_argument("--skip-ct", action="store_true")
    parser.add_argument("--skip-large-ct", action="store_true", help="no 512x512x200 peak-RAM measurement")
    parser.add_argument("--skip-monai", action="store_true")
    parser.add_argument("--monai-bf16", action="store_true", help="also MONAI with bf16 autocast, interleaved too")
    parser.add_argument("--skip-model-only", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--fill", action="store_true", help="also time Fill from painted slices (minutes per fill "
                                                             "on a CPU)")
    parser.add_argument("--fill-every-k", type=int, default=10, help="paint every k-th liver slice for --fill")
    parser.add_argument("--fill-repeats", type=int, default=2, help="fills per image for --fill (median reported)")
    parser.add_argument("--train", action="store_true", help="also time Train from three painted scans started from "
                                                              "the shipped model (minutes per modality on a CPU)")
    parser.add_argument("--train-every-k", type=int, default=5, help="paint every k-th liver slice for --train")
    parser.add_argument("--train-samples", type=int, default=64, help="slices per epoch for training throughput")
    parser.add_argument("--crop-size", type=int, default=128, help="training crop size")
    parser.add_argument("--train-to-dice", action="store_true", help="also time training to validation Dice 0.90")
    parser.add_argument("--dice-budget", type=float, default=600.0, help="seconds allowed for --train-to-dice")
    parser.add_argument("--dice-epochs", type=int, default=40, help="epoch schedule for --train-to-dice")
    parser.add_argument("--every-k", type=int, default=1, help="painted every k-th slice for --train-to-dice")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md and docs/benchmarks.json")
    parser.add_argument("--json", help="also write the results here (after each section)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv

    def checkpoint(partial: dict[str, Any]) -> None:
        if args.json:
            write_json(partial, Path(args.json))

    report = run_benchmark(args, checkpoint=checkpoint)
    checkpoint(report)
    print()
    for line in format_table(report):
        print(line)
    if args.write_docs:
        write_docs(report, REPO_ROOT / "docs" / "benchmarks.md", REPO_ROOT / "docs" / "benchmarks.json")
    print(speedup_line(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
