"""Is bfloat16 training faster than float32 on this CPU? The measurement behind ``CpuFeatures.bf16_is_faster``.

Training throughput (``bench/speed.py training_throughput``: sampling, augmentation, forward, backward,
step) of the default recipe on CHAOS MRI subjects 3 and 5, float32 and bfloat16 autocast interleaved,
one thread by default. Prints one line per run and what the library chose for this CPU::

    python bench/bf16_training.py --repeats 2 --json docs/bf16_training.json

The Zen 4 figures in docs/benchmarks.md (4.13 / 5.30 s per epoch of 64 slices in float32 against 2.53 /
2.70 s in bf16) came from these same calls, made by hand; the command above wrote docs/bf16_training.json
(1.6x). Nothing else ran either time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.speed import load_mri_case, machine_description, training_throughput  # noqa: E402
from LiverUNetLib.devices import autocast_dtype, cpu_features  # noqa: E402


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=64, help="slices per epoch")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = [load_mri_case(subject) for subject in ("3", "5")]
    runs = []
    for _ in range(args.repeats):
        for bf16 in (False, True):
            result = training_throughput(cases, {"mixed_precision": bf16, "device": "cpu"}, samples=args.samples)
            runs.append({"precision": "bfloat16" if bf16 else "float32", **result})
            print(f"{runs[-1]['precision']}: {result['seconds_per_epoch']:.2f} s per epoch of {args.samples} slices, "
                  f"{result['slices_per_s']:.1f} slices/s", flush=True)
    chosen = autocast_dtype(torch.device("cpu"), training=True)
    print(f"{cpu_features()}: training uses {'float32' if chosen is None else chosen}")
    if args.json:
        record = {"machine": machine_description(), "cpu_features": vars(cpu_features()), "runs": runs,
                  "training_precision_chosen": "float32" if chosen is None else str(chosen)}
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
