"""Peak RAM of one segmentation in a fresh process: ``liverunet segment`` (ours) or the MONAI pipeline.

Each measurement starts a new Python process, so imports, the model load and the run all count, and nothing from
an earlier run is still resident. The figure is VmHWM (the process's peak resident set) from /proc, which also
sees torch's native allocations that tracemalloc misses. Run as a module for one measurement::

    python -m bench.speed_memory ours IMAGE OUTPUT_FOLDER [--model MODEL.pt] [--threads 2]
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[1]


class Pipeline(str, enum.Enum):
    OURS = "ours"
    MONAI = "monai"


def proc_status_mb(field: str = "VmHWM") -> float:
    """A memory figure of this process from /proc/self/status, in MiB (0 where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def peak_ram(pipeline: Pipeline, source: Path, model_path: Optional[Path], threads: int, timeout: float = 900) -> dict[str, float]:
    """Peak resident memory (MiB) of a fresh process segmenting ``source`` once. ``model_path`` None: ours runs
    ``liverunet segment`` with no model, so the shipped model of the image's modality is chosen, as for a user."""
    if pipeline is Pipeline.MONAI and model_path is None:
        raise ValueError("the MONAI pipeline needs the model file it runs")
    with tempfile.TemporaryDirectory(prefix="liverunet-peak-") as work:
        command = [sys.executable, "-m", "bench.speed_memory", pipeline.value, str(source), work, "--threads", str(threads)]
        if model_path is not None:
            command += ["--model", str(model_path)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)
        for line in done.stdout.splitlines():
            if line.startswith("PEAK "):
                return json.loads(line[5:])
        raise RuntimeError(f"peak-RAM process failed ({done.returncode}): {done.stderr[-2000:]}")


def _measure(args: argparse.Namespace) -> dict[str, float]:
    """Inside the fresh process: one segmentation, then this process's peak memory."""
    import torch

    torch.set_num_threads(args.threads)
    output = Path(args.output)
    if Pipeline(args.pipeline) is Pipeline.OURS:
        from LiverUNetLib.cli import main as liverunet

        command = ["segment", args.source, "-o", str(output / "ours_liver.nii.gz"), "--quiet"]
        if args.model:
            command += ["--model", args.model]
        if liverunet(command) != 0:
            raise SystemExit("liverunet segment failed")
    else:
        from bench.speed_monai import MonaiEnsemblePipeline
        from LiverUNetLib.model_file import load_model

        MonaiEnsemblePipeline(load_model(args.model)).run(Path(args.source), output)
    result = {"peak_mb": proc_status_mb("VmHWM")}
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", choices=[p.value for p in Pipeline])
    parser.add_argument("source")
    parser.add_argument("output", help="folder for the mask")
    parser.add_argument("--model", help="model file (ours: default the shipped model of the image's modality)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    print("PEAK " + json.dumps(_measure(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
