"""What the quality estimate costs beside inference, with the shipped models on the CPU.

Each shipped model segments one scan of its data (CHAOS MRI subject 5, the CHAOS CT sample) five times with the
estimate and five times without, alternately; the estimate itself (``measure_uncertainty`` + ``estimate_quality``
on the same probability map) is timed apart too, since whole-inference times on a shared machine vary by more
than it costs.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any


from bench.quality_cases import SHARED
from bench.speed import machine_description
from LiverUNetLib.image_io import read_image
from LiverUNetLib.inference import InferenceConfig, segment_volume
from LiverUNetLib.model_file import load_model
from LiverUNetLib.quality import calibration_of, estimate_quality, measure_uncertainty
from LiverUNetLib.shipped_models import shipped_model_path

REPEATS = 5


def _time(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure_speed(results: Path) -> dict[str, Any]:
    scans = {"mri": SHARED / "chaos-mr-t2" / "images" / "image_5.nii.gz", "ct": SHARED / "chaos-ct-sample" / "dicom"}
    out: dict[str, Any] = {"machine": machine_description(), "repeats": REPEATS}
    for modality, path in scans.items():
        volume = read_image(path)
        model = load_model(shipped_model_path(modality))
        on, off = InferenceConfig(device="cpu"), InferenceConfig(device="cpu", estimate_quality=False)
        segment_volume(volume, model, on)  # warm-up: the folded networks are cached
        with_estimate, without = [], []
        for _ in range(REPEATS):
            with_estimate.append(_time(lambda: segment_volume(volume, model, on)))
            without.append(_time(lambda: segment_volume(volume, model, off)))
        result = segment_volume(volume, model, InferenceConfig(device="cpu", return_probability=True))
        probability, mask = result.probability.array, result.mask.array > 0
        axis = volume.slice_axis()
        calibration = calibration_of(model.card.quality)
        alone = [_time(lambda: estimate_quality(measure_uncertainty(probability, mask, axis), calibration, axis))
                 for _ in range(REPEATS)]
        inference = statistics.median(without)
        out[modality] = {"shape": list(volume.array.shape), "inference_seconds_median": round(inference, 3),
                         "with_estimate_seconds_median": round(statistics.median(with_estimate), 3),
                         "estimate_seconds_median": round(statistics.median(alone), 4),
                         "estimate_share_of_inference": round(statistics.median(alone) / inference, 4),
                         "seconds_without": [round(v, 3) for v in without],
                         "seconds_with": [round(v, 3) for v in with_estimate]}
        print(f"{modality}: inference {inference:.2f} s, estimate {statistics.median(alone) * 1000:.0f} ms "
              f"({100 * statistics.median(alone) / inference:.1f} %)", flush=True)
    results.mkdir(parents=True, exist_ok=True)
    (results / "speed.json").write_text(json.dumps(out, indent=1))
    return out
