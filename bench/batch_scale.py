"""Cohort scale on one machine: batch segmentation on Dask workers, a killed batch rerun, DDP training.

``segment``: a cohort of ``--cases`` CHAOS-sized MRIs, copies of the 15 shared CHAOS T2-SPIR subjects in turn
(in a temporary folder, never in the project), segmented by ``liverunet segment`` with the shipped MRI model:

* one process (the reference masks), 1 Dask worker and 2 Dask workers (LocalCluster), and 2 local worker
  processes (no Dask), one torch thread each (and ITK's, OMP's): wall seconds of the whole command (start-up and cluster included), the speed-up of 2
  workers over 1, and whether every mask equals the one-process mask;
* the 2-worker run killed (SIGKILL to its process group, as a batch scheduler ends a job) at a random moment,
  then rerun: every case done exactly once in the end (the masks finished before the kill untouched, the
  rerun doing the others), processes left over, staged files left over, masks equal to the reference;
* peak resident memory of each worker (from the report) against a fresh one-image ``liverunet segment``.

``ddp``: training on one CV fold of the CHAOS subjects (10 train with the default 20 % validation hold-out,
5 test), short epochs, in one process (``--baseline-threads``, 2 by default) against ``torchrun
--nproc_per_node 2`` with one thread each: the test subjects' 3D Dice, the validation Dice, training slices
per second and their ratio.

    nice -n 5 python bench/batch_scale.py segment --cases 40 --json docs/cohort.json
    nice -n 5 python bench/batch_scale.py ddp --epochs 16 --seeds 0 1 --baseline-threads 2 1 \
        --json docs/cohort.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from LiverUNetLib.image_io import read_image  # noqa: E402

DATA = Path(os.environ.get("LIVERUNET_DATA", ROOT.parent / "shared" / "data")) / "chaos-mr-t2"
SUBJECTS = ["3", "5", "13", "15", "19", "20", "21", "22", "31", "32", "34", "36", "37", "38", "39"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def make_cohort(folder: Path, count: int) -> Path:
    """``count`` copies of the CHAOS T2 images, the subjects in turn: case_00_s3.nii.gz, case_01_s5.nii.gz ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        subject = SUBJECTS[number % len(SUBJECTS)]
        shutil.copyfile(DATA / "images" / f"image_{subject}.nii.gz", folder / f"case_{number:02d}_s{subject}.nii.gz")
    return folder


def segment(cohort: Path, output: Path, *options: str) -> dict[str, Any]:
    """``liverunet segment COHORT -o OUTPUT --device cpu --threads-per-worker 1 OPTIONS``: wall seconds and code."""
    command = [sys.executable, "-m", "LiverUNetLib.cli", "segment", "-q", str(cohort), "-o", str(output),
               "--device", "cpu", "--threads-per-worker", "1", *options]
    started = time.perf_counter()
    done = subprocess.run(command, env=environment(**ONE_THREAD), cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((output / "report.json").read_text())["summary"]
    return {"command": "liverunet segment COHORT -o OUT --device cpu --threads-per-worker 1 " + " ".join(options),
            "wall_seconds": round(seconds, 1), "batch_seconds": summary.get("seconds"), "summary": summary}


def rows(output: Path) -> dict[str, dict[str, str]]:
    with open(output / "report.csv", newline="", encoding="utf-8") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


def masks(output: Path) -> dict[str, np.ndarray]:
    return {p.name: read_image(p).array for p in sorted(output.glob("*_liver.nii.gz"))}


def identical(output: Path, reference: dict[str, np.ndarray]) -> int:
    mine = masks(output)
    return sum(name in mine and np.array_equal(mine[name], array) for name, array in reference.items())


def stamps(output: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in output.glob("*_liver.nii.gz")}


def kill_and_rerun(cohort: Path, output: Path, expected_seconds: float, seed: int,
                   reference: dict[str, np.ndarray]) -> dict[str, Any]:
    """The 2-worker Dask run killed at a random moment, then the same command again."""
    import psutil

    options = ["--workers", "2", "--engine", "dask"]
    command = [sys.executable, "-m", "LiverUNetLib.cli", "segment", "-q", str(cohort), "-o", str(output),
               "--device", "cpu", "--threads-per-worker", "1", *options]
    moment = random.Random(seed).uniform(0.15, 0.85) * expected_seconds
    process = subprocess.Popen(command, env=environment(**ONE_THREAD), cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(moment)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(2.0)
    left = [p.pid for p in psutil.process_iter() if _session(p.pid) == process.pid]
    finished = stamps(output)
    staged = [p.name for p in output.glob(".*tmp*")]
    rerun = segment(cohort, output, *options)
    table = rows(output)
    redone = [name for name, stamp in finished.items() if stamps(output).get(name) != stamp]
    done_again = sorted(r["case_id"] for r in table.values() if r["status"] == "done")
    earlier = sorted(r["case_id"] for r in table.values() if r["status"] == "done earlier")
    return {
        "killed_after_seconds": round(moment, 1), "masks_finished_before_the_kill": len(finished),
        "processes_left_after_the_kill": len(left), "staged_files_left_after_the_kill": len(staged),
        "rerun": rerun, "rerun_done": len(done_again), "rerun_done_earlier": len(earlier),
        "finished_masks_redone": len(redone),
        "every_case_once": not redone and len(earlier) == len(finished) and len(finished) + len(done_again) == len(table),
        "masks_equal_to_one_process": identical(output, reference),
        "staged_files_left_after_the_rerun": len(list(output.glob(".*tmp*"))),
    }


def _session(pid: int) -> int:
    try:
        return os.getsid(pid)
    except OSError:
        return -1


def single_image_peak_mib(image: Path, output: Path) -> float:
    """Peak resident memory of a fresh one-image ``liverunet segment`` (start-up and model load included)."""
    code = ("import resource, sys; from LiverUNetLib.cli import main; code = main(sys.argv[1:]); "
            "print('VMHWM', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, "segment", "-q", str(image), "-o", str(output), "--device", "cpu"],
                          capture_output=True, text=True, env=environment(**ONE_THREAD), cwd=ROOT, check=True)
    return round(int(next(ln for ln in done.stdout.splitlines() if ln.startswith("VMHWM")).split()[1]) / 1024, 1)


def parallel_capacity(image: Path) -> dict[str, Any]:
    """What a second one-thread process gains on this machine now: seconds per segmentation of ``image`` in one
    process alone, then in two at once (each after a warm-up). Other programs running on the machine lower it."""
    code = ("import sys, time, torch; torch.set_num_threads(1); from LiverUNetLib.image_io import read_image; "
            "from LiverUNetLib.inference import segment_volume; from LiverUNetLib.model_file import choose_shipped_model, "
            "load_model; v = read_image(sys.argv[1]); m = load_model(choose_shipped_model(v).path); segment_volume(v, m); "
            "start = float(sys.argv[2]);\nwhile time.time() < start: time.sleep(0.01)\n"
            "t = time.perf_counter();\nfor _ in range(3): segment_volume(v, m)\nprint((time.perf_counter() - t) / 3)")

    def together(count: int) -> list[float]:
        start = str(time.time() + 15)  # after every process has started and warmed up
        processes = [subprocess.Popen([sys.executable, "-c", code, str(image), start], env=environment(**ONE_THREAD),
                                      cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(count)]
        return [float(p.communicate()[0].strip().splitlines()[-1]) for p in processes]

    alone, pair = together(1)[0], together(2)
    return {"seconds_alone": round(alone, 2), "seconds_two_at_once": [round(t, 2) for t in pair],
            "throughput_gain": round(2 * alone / (sum(pair) / len(pair)), 2)}


def run_segment(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="liverunet-cohort-") as temporary:
        work = Path(temporary)
        cohort = make_cohort(work / "cohort", args.cases)
        capacity = parallel_capacity(next(cohort.iterdir()))
        one = segment(cohort, work / "one_process")
        reference = masks(work / "one_process")
        runs: dict[str, Any] = {"one_process": one}
        # 1 and 2 Dask workers in the order 1, 2, 2, 1: a load from other programs that rises or falls during the
        # runs weighs on both alike
        for label, workers, engine in (("dask_1_worker", "1", "dask"), ("dask_2_workers", "2", "dask"),
                                       ("dask_2_workers_again", "2", "dask"), ("dask_1_worker_again", "1", "dask"),
                                       ("processes_2_workers", "2", "processes")):
            runs[label] = segment(cohort, work / label, "--workers", workers, "--engine", engine)
            runs[label]["masks_equal_to_one_process"] = identical(work / label, reference)
        table = rows(work / "dask_2_workers")
        workers: dict[str, float] = {}
        for row in table.values():
            workers[row["worker"]] = max(workers.get(row["worker"], 0.0), float(row["peak_memory_mib"] or 0))
        killed = kill_and_rerun(cohort, work / "killed", runs["dask_2_workers"]["wall_seconds"], args.seed, reference)
        single = single_image_peak_mib(next(cohort.iterdir()), work / "single.nii.gz")
    one_worker = runs["dask_1_worker"]["wall_seconds"] + runs["dask_1_worker_again"]["wall_seconds"]
    two_workers = runs["dask_2_workers"]["wall_seconds"] + runs["dask_2_workers_again"]["wall_seconds"]
    return {
        "cases": args.cases, "masks_in_reference": len(reference), "parallel_capacity": capacity, "runs": runs,
        "speed_up_2_over_1_dask_worker": round(one_worker / two_workers, 2),
        "killed_and_rerun": killed,
        "peak_memory_mib": {"per_dask_worker": sorted(round(v, 1) for v in workers.values()),
                            "one_image_liverunet_segment": single},
    }


def train(images: list[Path], labels: list[Path], output: Path, settings: dict[str, Any], processes: int,
          threads: int) -> dict[str, Any]:
    """``liverunet train`` in one process (``threads`` threads) or under torchrun (one thread each); the epochs' pace is read
    from the progress lines as they arrive (the time from the first epoch's end to the last's), so start-up and
    the cases' preparation, which every process does in full, are not counted in the throughput."""
    import re

    from LiverUNetLib.model_file import load_model

    tail = ["-m", "LiverUNetLib.cli", "train", "--images", *map(str, images), "--labels", *map(str, labels),
            "--label-value", "1", "-o", str(output), "--settings", json.dumps(settings)]
    if processes == 1:
        command, env = [sys.executable, *tail], environment(OMP_NUM_THREADS=str(threads))
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), *tail]
        env = environment(**ONE_THREAD)
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    epochs: dict[int, float] = {}
    tail_lines: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"^training .*epoch (\d+)/\d+", line)
        if found:
            epochs.setdefault(int(found.group(1)), time.perf_counter())
        tail_lines = (tail_lines + [line])[-30:]
    wall = time.perf_counter() - started
    if process.wait() != 0:
        raise SystemExit("training failed:\n" + "".join(tail_lines))
    card = load_model(output).card
    first, last = min(epochs), max(epochs)
    paced = (last - first) * settings["samples_per_epoch"] / (epochs[last] - epochs[first]) if last > first else None
    return {"processes": processes, "threads_each": threads if processes == 1 else 1, "wall_seconds": round(wall, 1),
            "card_training_seconds": card.training["seconds"], "epochs_run": card.training["epochs_run"],
            "slices_per_second": None if paced is None else round(paced, 2),
            "validation_dice": card.validation.get("mean_dice"), "precision": card.training.get("precision")}


def test_dice(model_path: Path, subjects: list[str]) -> float:
    from LiverUNetLib.inference import segment_volume
    from LiverUNetLib.model_file import load_model

    model, scores = load_model(model_path), []
    for subject in subjects:
        result = segment_volume(read_image(DATA / "images" / f"image_{subject}.nii.gz"), model, None)
        truth, found = read_image(DATA / "labels" / f"label_{subject}.nii.gz").array == 1, result.mask.array > 0
        scores.append(2 * float((truth & found).sum()) / float(truth.sum() + found.sum()))
    return round(float(np.mean(scores)), 4)


def run_ddp(args: argparse.Namespace) -> dict[str, Any]:
    train_subjects, test_subjects = SUBJECTS[:10], SUBJECTS[10:]
    images = [DATA / "images" / f"image_{s}.nii.gz" for s in train_subjects]
    labels = [DATA / "labels" / f"label_{s}.nii.gz" for s in train_subjects]
    results = []
    capacity = parallel_capacity(images[0])
    with tempfile.TemporaryDirectory(prefix="liverunet-ddp-") as temporary:
        for seed in args.seeds:
            settings = {"epochs": args.epochs, "samples_per_epoch": args.samples, "every_slice_each_epoch": False,
                        "device": "cpu", "seed": seed}
            for processes, threads in [(1, t) for t in args.baseline_threads] + [(2, 1)]:
                model = Path(temporary) / f"seed{seed}_p{processes}_t{threads}.pt"
                row = {"seed": seed, **train(images, labels, model, settings, processes, threads)}
                row["test_dice"] = test_dice(model, test_subjects)
                results.append(row)
                print(json.dumps(row), flush=True)
    ratio = {f"seed {a['seed']}, over 1 process x {a['threads_each']} threads":
             round(b["slices_per_second"] / a["slices_per_second"], 2)
             for a in results if a["processes"] == 1
             for b in results if b["processes"] == 2 and b["seed"] == a["seed"] and a["slices_per_second"]}
    return {"parallel_capacity": capacity, "train_subjects": train_subjects, "test_subjects": test_subjects,
            "epochs": args.epochs,
            "samples_per_epoch": args.samples, "runs": results, "throughput_ratio_2_processes_over_1": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    seg = sub.add_parser("segment", help="Dask workers, a killed batch, memory per worker")
    seg.add_argument("--cases", type=int, default=40)
    seg.add_argument("--seed", type=int, default=0, help="picks the moment of the kill")
    ddp = sub.add_parser("ddp", help="DDP training with 2 CPU processes against 1")
    ddp.add_argument("--epochs", type=int, default=20)
    ddp.add_argument("--samples", type=int, default=128, help="slices per epoch")
    ddp.add_argument("--seeds", type=int, nargs="+", default=[0])
    ddp.add_argument("--baseline-threads", type=int, nargs="+", default=[2], help="threads of the one-process runs")
    for part in (seg, ddp):
        part.add_argument("--json", type=Path, help="merge the results into this JSON file")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = run_segment(args) if args.part == "segment" else run_ddp(args)
    # other programs on the machine slow one-thread workers and multi-threaded processes differently: said here
    results["machine"] = {"cpu_cores": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "python": platform.python_version(), "load_average_1min_before_after":
                          [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}
    print(json.dumps(results, indent=1))
    if args.json:
        data = json.loads(args.json.read_text()) if args.json.is_file() else {}
        data[args.part] = results
        args.json.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
