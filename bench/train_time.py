"""*Train* from three painted scans, started from the shipped model, timed as Slicer runs it.

Slicer's *Train* panel hands the worker a ``train`` job: the painted cases (image + painted label files), the
panel's settings (``LiverUNetGuiLib/parameters.py``: epochs "automatic", one fold, one network, augmentation 1.0,
slices beyond the painting liver-free, the modality read from the images) and, with *Start from the selected
model* on the automatic entry, the shipped model of the images' modality. Here the same job runs in this process
on three scans of one modality (CHAOS MRI subjects, or BTCV CTs) painted on every ``k``-th liver slice
(``keep_every_k``, as the three-scan cross-validation paints them). Timed: the job from reading the files to the
written model (wall clock and process CPU seconds). ``--settings`` changes the panel's settings (``'{"epochs":
120, "learning_rate": 0.002}'`` is the schedule for random weights, run from the shipped model)::

    python bench/train_time.py --modality mri --json runs/train_time_mri.json
    python bench/train_time.py --modality ct --json runs/train_time_ct.json
    python bench/speed.py --train ...            # both, in the speed benchmark's report
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

from bench.mri_fill import cpu_seconds  # noqa: E402
from bench.speed_report import write_json  # noqa: E402
from LiverUNetLib.image_io import write_image  # noqa: E402
from LiverUNetLib.labels import sparse_label_from_mask  # noqa: E402
from LiverUNetLib.volume import Volume  # noqa: E402

#: The Train panel's defaults (LiverUNet/LiverUNetGuiLib/parameters.py, trainConfig()); epochs None is the
#: panel's "automatic" (LiverUNetLib/train_schedule.py).
PANEL_SETTINGS: dict[str, Any] = {"epochs": None, "folds": 1, "networks_per_fold": 1, "augmentation_strength": 1.0,
                                  "liver_free_beyond_painting": True, "modality": None}
#: Three scans per modality: CHAOS MRI subjects of the three-scan cross-validation's first fold, three BTCV CTs.
SUBJECTS = {"mri": ["20", "37", "38"], "ct": ["00", "01", "02"]}


def load_scan(modality: str, subject: str) -> tuple[Volume, Volume]:
    """The image and its liver mask (1 = liver) of a CHAOS MRI subject or a BTCV CT."""
    if modality == "mri":
        from bench.accuracy import load_subject

        image, _, liver = load_subject(subject)
        return image, liver
    from bench.accuracy_ct import load_subject as load_ct

    image, liver, _ = load_ct(subject)
    return image, liver


def image_file(modality: str, subject: str) -> Path:
    """The shared data's image file that ``load_scan`` reads: the job reads it where it lies."""
    if modality == "mri":
        from bench.accuracy import DATA

        return DATA / "images" / f"image_{subject}.nii.gz"
    from bench.accuracy_ct import BTCV

    return BTCV / "images" / f"ct_{subject}.nii.gz"


def painted_cases(modality: str, subjects: list[str], k: int, folder: Path) -> list[dict[str, Any]]:
    """The worker's case list: each scan's image file and its liver painted on every ``k``-th liver slice."""
    cases = []
    for subject in subjects:
        image, liver = load_scan(modality, subject)
        painted = sparse_label_from_mask(image, liver, label_value=1).keep_every_k(k)
        label_file = folder / f"painted_{subject}.nii.gz"
        write_image(image.with_array(painted.mask.astype(np.uint8)), label_file)
        cases.append({"name": subject, "image": str(image_file(modality, subject)), "label": str(label_file),
                      "label_value": 1})
    return cases


def time_train(modality: str, subjects: list[str], k: int, settings: Optional[dict[str, Any]] = None,
               device: str = "auto") -> dict[str, Any]:
    """The worker's train job from the shipped model on painted scans of ``modality``; its timing record."""
    from bench.speed_measure import machine_description
    from LiverUNetLib.progress import CancelToken
    from LiverUNetLib.shipped_models import SHIPPED_START
    from LiverUNetLib.worker_jobs import run_job

    settings = {**PANEL_SETTINGS, "device": device, **(settings or {})}
    with tempfile.TemporaryDirectory(prefix="liverunet-train-time-") as work:
        cases = painted_cases(modality, subjects, k, Path(work))
        job = {"kind": "train", "cases": cases, "output": str(Path(work) / "model.pt"), "settings": settings,
               "init": SHIPPED_START, "resume": False}
        events: list[dict[str, Any]] = []
        wall, cpu = time.perf_counter(), cpu_seconds()
        result = run_job(job, events.append, CancelToken())
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    epochs = max((e.get("epochs") or 0 for e in events), default=0)
    return {"protocol": "train_time", "modality": modality, "subjects": subjects, "every_k": k, "settings": settings,
            "annotated_slices": result["annotated_slices"], "epochs_run": result["epochs"], "epochs": epochs,
            "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "device": result["device"],
            "machine": machine_description()}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=sorted(SUBJECTS), default="mri")
    parser.add_argument("--subjects", nargs=3, help="three subjects (default: " +
                        "; ".join(f"{m} {' '.join(s)}" for m, s in SUBJECTS.items()) + ")")
    parser.add_argument("--k", type=int, default=5, help="paint every k-th liver slice (default 5)")
    parser.add_argument("--settings", type=json.loads, default={}, help="panel settings to change, as JSON")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, all cores)")
    parser.add_argument("--json", type=Path, help="also write the record here")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    record = time_train(args.modality, args.subjects or SUBJECTS[args.modality], args.k, args.settings)
    print(json.dumps({key: record[key] for key in
                      ("modality", "subjects", "annotated_slices", "epochs_run", "seconds", "cpu_seconds")}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(record, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
