"""Speed and memory of the shipped models as a user runs them: ``liverunet segment`` with no model given.

For each shipped model, on the data it is for (CHAOS MRI subject 3; the 512x512x78 CHAOS CT DICOM series):

* end to end after start-up: read the image, choose the shipped model (loaded once, as the CLI and the warm
  worker keep it), segment, write the ``.nii.gz``; median of ``--repeats`` runs after one warm-up;
* peak RAM (VmHWM of a fresh ``liverunet segment`` process, start-up included) on the image itself and on a
  512x512x200 CT (the CHAOS CT mirrored along z to 200 slices).

    python bench/shipped_speed.py --threads 2 --repeats 5 --json docs/shipped_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from LiverUNetLib.image_io import read_image, write_image  # noqa: E402
from LiverUNetLib.inference import InferenceConfig, segment_volume  # noqa: E402
from LiverUNetLib.model_file import choose_shipped_model, load_model  # noqa: E402
from LiverUNetLib.segmentation_file import write_liver_mask  # noqa: E402
from LiverUNetLib.volume import Volume  # noqa: E402

DATA = Path(os.environ.get("LIVERUNET_DATA", ROOT.parent / "shared" / "data"))
CASES = {"mri": DATA / "chaos-mr-t2" / "images" / "image_3.nii.gz", "ct": DATA / "chaos-ct-sample" / "dicom"}


def end_to_end(source: Path, output: Path, repeats: int) -> dict[str, Any]:
    """Median seconds of read -> segment -> write with the model chosen and loaded once (a warm process)."""
    choice = choose_shipped_model(read_image(source))
    model = load_model(choice.path)
    config = InferenceConfig(device="cpu")
    times, inference = [], []
    for run in range(repeats + 1):  # the first run warms up (oneDNN kernels, allocator)
        started = time.perf_counter()
        volume = read_image(source)
        result = segment_volume(volume, model, config)
        write_liver_mask(result.mask, output)
        if run:
            times.append(time.perf_counter() - started)
            inference.append(result.seconds)
    return {"model": choice.path.name, "shape": list(volume.array.shape), "seconds_median": round(statistics.median(times), 3),
            "seconds_all": [round(t, 3) for t in times], "segment_volume_seconds_median": round(statistics.median(inference), 3)}


def peak_ram_mib(source: Path, output: Path, threads: int) -> float:
    """VmHWM of a fresh ``liverunet segment`` process (its own start-up and model load included)."""
    code = ("import resource, sys; from LiverUNetLib.cli import main; code = main(sys.argv[1:]); "
            "print('VMHWM', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", code, "segment", str(source), "-o", str(output), "--device", "cpu",
                           "--quiet"], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    kib = int(next(line for line in done.stdout.splitlines() if line.startswith("VMHWM")).split()[1])
    return round(kib / 1024, 1)


def large_ct(folder: Path) -> Path:
    """The CHAOS CT mirrored along z to 512x512x200 slices, written once as .nii.gz."""
    path = folder / "ct_512x512x200.nii.gz"
    if not path.exists():
        ct = read_image(CASES["ct"])
        array = ct.array.astype(np.int16)
        mirrored = np.concatenate([array, array[::-1], array, array[::-1]])[:200]
        write_image(Volume(mirrored, ct.ijk_to_ras.copy()), path)
    return path


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                               "threads": args.threads, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for modality, source in CASES.items():
            row = end_to_end(source, work / f"{modality}.nii.gz", args.repeats)
            row["peak_ram_mib"] = peak_ram_mib(source, work / f"{modality}_ram.nii.gz", args.threads)
            results[modality] = row
            print(f"{modality}: {row['model']} {row['shape']}: end to end {row['seconds_median']} s after start-up "
                  f"(segment_volume {row['segment_volume_seconds_median']} s); peak RAM {row['peak_ram_mib']} MiB", flush=True)
        big = large_ct(work)
        results["ct_512x512x200_peak_ram_mib"] = peak_ram_mib(big, work / "big.nii.gz", args.threads)
        print(f"ct 512x512x200: peak RAM {results['ct_512x512x200_peak_ram_mib']} MiB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
