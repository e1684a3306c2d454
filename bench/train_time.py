"""*Train* from three painted scans, started from the shipped model, timed as Slicer runs it.

Slicer's *Train* panel hands the worker a ``train`` job: the painted cases (image + painted label files), the
panel's settings (``LiverUNetGuiLib/parameters.py``: 120 epochs, one fold, one network, augmentation 1.0, slices
beyond the painting liver-free, the modality read from the images) and, with *Start from the selected model* on
the automatic entry, the shipped model of the images' modality. Here the same job runs in this process on three
CHAOS MRI subjects painted on every ``k``-th liver slice (``keep_every_k``). Timed: the job from reading the
files to the written model (wall clock and process CPU seconds); ``--epochs`` shortens the schedule for a
quick look (the record says how many ran)::

    python bench/train_time.py --threads 2 --json runs/train_time.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.accuracy import DATA, load_subject  # noqa: E402
from bench.mri_fill import cpu_seconds  # noqa: E402
from LiverUNetLib.image_io import write_image  # noqa: E402

#: The Train panel's defaults (LiverUNet/LiverUNetGuiLib/parameters.py, trainConfig()).
PANEL_SETTINGS: dict[str, Any] = {"epochs": 120, "folds": 1, "networks_per_fold": 1, "augmentation_strength": 1.0,
                                  "liver_free_beyond_painting": True, "modality": None}


def painted_cases(subjects: list[str], k: int, folder: Path) -> list[dict[str, Any]]:
    """The worker's case list: each subject's image and its liver painted on every ``k``-th liver slice."""
    cases = []
    for subject in subjects:
        image, dense, _ = load_subject(subject)
        painted = dense.keep_every_k(k)
        label = folder / f"painted_{subject}.nii.gz"
        write_image(image.with_array(painted.mask.astype(np.uint8)), label)
        cases.append({"name": subject, "image": str(DATA / "images" / f"image_{subject}.nii.gz"), "label": str(label),
                      "label_value": 1})
    return cases


def time_train(subjects: list[str], k: int, epochs: Optional[int], device: str = "cpu") -> dict[str, Any]:
    from bench.speed import machine_description
    from LiverUNetLib.progress import CancelToken
    from LiverUNetLib.shipped_models import SHIPPED_START
    from LiverUNetLib.worker_jobs import run_job

    settings = {**PANEL_SETTINGS, "device": device, **({"epochs": epochs} if epochs else {})}
    with tempfile.TemporaryDirectory(prefix="liverunet-train-time-") as work:
        cases = painted_cases(subjects, k, Path(work))
        job = {"kind": "train", "cases": cases, "output": str(Path(work) / "model.pt"), "settings": settings,
               "init": SHIPPED_START, "resume": False}
        machine = machine_description()
        wall, cpu = time.perf_counter(), cpu_seconds()
        result = run_job(job, lambda _event: None, CancelToken())
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return {"protocol": "train_time", "subjects": subjects, "every_k": k, "settings": settings,
            "annotated_slices": result["annotated_slices"], "epochs_run": result["epochs"],
            "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "device": result["device"], "machine": machine}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", nargs=3, default=["3", "5", "13"])
    parser.add_argument("--k", type=int, default=10, help="paint every k-th liver slice")
    parser.add_argument("--epochs", type=int, help="fewer epochs than the panel's 120, for a quick look")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the record here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    record = time_train(args.subjects, args.k, args.epochs)
    print(json.dumps({key: record[key] for key in ("subjects", "annotated_slices", "epochs_run", "seconds", "cpu_seconds")}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
