"""How long one "Segment liver" takes through the Slicer logic: a fresh worker per job or the warm worker.

Runs ``LiverUNetLogic.segmentLiver`` on real MRML (slicer-core, no GUI) with the shipped default model
on a CHAOS T2 subject, ``--repeats`` times with ``keepWorkerWarm=False`` and then with ``True``, and
prints the wall time of each click (node to segment, everything included). The warm worker's first
click includes its start-up::

    python bench/studies/slicer_worker_latency.py --repeats 4 --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "Testing"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", default="5")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the worker")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from bench.accuracy import DATA
    from LiverUNetLib.image_io import read_image
    from slicer_harness import slicerCore

    slicerCore()
    from LiverUNetSlicerLib import LiverUNetLogic
    from LiverUNetSlicerLib.nodes import addVolumeNode

    volume = addVolumeNode(read_image(DATA / "images" / f"image_{args.subject}.nii.gz"), f"subject {args.subject}")
    for warm in (False, True):
        logic = LiverUNetLogic(keepWorkerWarm=warm)
        segmentation = None
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            segmentation = logic.segmentLiver(volume, segmentation, None, "cpu", timeoutSeconds=600)
            seconds.append(time.perf_counter() - started)
        logic.shutdownWorker()
        label = "warm worker " if warm else "fresh worker"
        print(f"{label}: " + ", ".join(f"{s:.2f}" for s in seconds) + " s per click")


if __name__ == "__main__":
    main()
