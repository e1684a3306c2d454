"""*Fill from painted slices* timed end to end as the Segment Editor effect runs it, shipped recipe against others.

The effect writes the source volume and the painted segment to NRRD files and hands the warm worker one ``fill``
job (``worker_jobs.run_fill``: read both, ``fill_from_painted`` from the shipped model of the image's modality,
write the filled mask). Here that job runs in this process on the CHAOS CT sample (512x512x78) and CHAOS MRI
subjects (256x256), each painted on every ``k``-th liver slice of its manual label (``keep_every_k``). One
untimed fill first (imports, kernels, the shipped model loaded into the cache: what a warm worker has already
done), then ``--repeats`` rounds, each timing every case with every recipe in turn; the median is reported.
Recipes: ``shipped`` (``FILL_RECIPE``) and ``--compare NAME=JSON`` (settings the job applies over it, e.g.
``e6='{"epochs": 6}'``). Scored: Dice on the unpainted slices, so a faster recipe shows the accuracy it keeps::

    python bench/fill_time.py --threads 2 --repeats 3 --compare 'e6={"epochs": 6}' --json runs/fill_time.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.accuracy import load_subject  # noqa: E402
from bench.accuracy_scores import mask_dice  # noqa: E402
from bench.ct_fill import load_ct_sample  # noqa: E402
from bench.mri_fill import cpu_seconds  # noqa: E402
from LiverUNetLib.image_io import read_image, write_image  # noqa: E402
from LiverUNetLib.labels import sparse_label_from_mask  # noqa: E402


def write_case(name: str, k: int, folder: Path) -> dict[str, Any]:
    """The effect's two files for one case (``source.nrrd``, ``painted.nrrd``), its liver and painted slices."""
    if name == "ct":
        image, liver = load_ct_sample()
        dense = sparse_label_from_mask(image, liver, dense=True)
    else:
        image, dense, liver = load_subject(name.removeprefix("mri"))
    painted = dense.keep_every_k(k)
    source, label = folder / f"{name}_k{k}_source.nrrd", folder / f"{name}_k{k}_painted.nrrd"
    write_image(image, source)
    write_image(image.with_array(painted.mask.astype(np.uint8)), label)
    return {"case": f"{name} k={k}", "shape": list(image.array.shape), "source": source, "painted": label,
            "liver": liver.array > 0, "axis": painted.slice_axis, "painted_slices": painted.annotated.tolist()}


def run_fill(case: dict[str, Any], settings: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The effect's fill job in this process; its wall-clock and CPU seconds and the Dice on the unpainted slices."""
    from LiverUNetLib.progress import CancelToken
    from LiverUNetLib.shipped_models import SHIPPED_START
    from LiverUNetLib.worker_jobs import run_job

    output = folder / "filled.nrrd"
    job = {"kind": "fill", "image": str(case["source"]), "painted": str(case["painted"]), "output": str(output),
           "start_model": SHIPPED_START, "device": "cpu", "settings": settings}
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = run_job(job, lambda _event: None, CancelToken())
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    filled = read_image(output).array > 0
    unpainted = np.setdiff1d(np.arange(filled.shape[case["axis"]]), case["painted_slices"])
    dice = mask_dice(np.take(case["liver"], unpainted, axis=case["axis"]), np.take(filled, unpainted, axis=case["axis"]))
    return {"seconds": wall, "cpu_seconds": cpu, "dice_unpainted": dice, "model": result["model"]}


def measure(cases: list[tuple[str, int]], recipes: dict[str, dict[str, Any]], repeats: int) -> dict[str, Any]:
    from bench.speed import machine_description

    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="liverunet-fill-time-") as work:
        folder = Path(work)
        written = [write_case(name, k, folder) for name, k in cases]
        machine = machine_description()
        first = run_fill(written[-1], {}, folder)  # imports, kernels, the shipped model into the cache
        for _ in range(repeats):
            for case in written:
                for recipe, settings in recipes.items():
                    rows.setdefault((case["case"], recipe), []).append(run_fill(case, settings, folder))
    table = []
    for (case, recipe), runs in rows.items():
        shape = next(c["shape"] for c in written if c["case"] == case)
        painted = next(len(c["painted_slices"]) for c in written if c["case"] == case)
        table.append({"case": case, "shape": shape, "painted": painted, "recipe": recipe, "settings": recipes[recipe],
                      "seconds_median": round(statistics.median(r["seconds"] for r in runs), 2),
                      "seconds": [round(r["seconds"], 2) for r in runs],
                      "cpu_seconds": [round(r["cpu_seconds"], 2) for r in runs],
                      "dice_unpainted": round(runs[0]["dice_unpainted"], 4), "model": runs[0]["model"]})
    return {"protocol": "fill_time", "machine": machine, "first_fill_seconds": round(first["seconds"], 2),
            "first_fill_case": written[-1]["case"], "rows": table}


def markdown(record: dict[str, Any]) -> str:
    lines = ["| case | painted slices | recipe | seconds (median) | runs | Dice, unpainted slices |", "|---|---|---|---|---|---|"]
    for row in record["rows"]:
        lines.append(f"| {row['case']} ({'x'.join(map(str, row['shape'][::-1]))}) | {row['painted']} | {row['recipe']} | "
                     f"{row['seconds_median']:.1f} | {', '.join(f'{s:.1f}' for s in row['seconds'])} | {row['dice_unpainted']:.4f} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["ct:10", "mri3:10", "mri3:3"], metavar="NAME:K",
                        help="ct (the CHAOS CT sample) or mriN (CHAOS MRI subject N), painted every K-th liver slice")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=JSON",
                        help="another recipe: settings the fill job applies over the shipped recipe")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    recipes: dict[str, dict[str, Any]] = {"shipped": {}}
    for text in args.compare:
        name, _, settings = text.partition("=")
        recipes[name] = json.loads(settings)
    cases = [(name, int(k)) for name, _, k in (text.partition(":") for text in args.cases)]
    record = measure(cases, recipes, args.repeats)
    print(f"first fill in this process ({record['first_fill_case']}): {record['first_fill_seconds']:.1f} s")
    print(markdown(record))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
