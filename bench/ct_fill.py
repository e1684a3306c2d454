"""*Fill from painted slices* on CT: the CHAOS CT sample painted every k-th liver slice, filled.

The product's CT promise is "paint a few slices, then fill or train"; only MRI had been measured. The
one CT with a manual liver mask here (CHAOS CT sample: 78 slices of 2 mm, the liver on 66) is painted
every k-th liver slice (k = 5, 10, 20, 30, 40: 1 to 8 cm apart, 14 down to 2 painted slices) and
filled by

* ``mci``: ITK's morphological contour interpolation (Slicer's "Fill between slices");
* ``product``: exactly what the effect runs (``FILL_RECIPE`` fine-tuning the shipped MRI model; the
  fine-tuned model is a CT model with CT intensity normalisation; a start made for another modality is
  never averaged in, so here the fine-tuned network alone; the default inference with smoothing across
  slices);
* ``with_start``: as ``product``, with the start averaged in whenever it scores 0.8 on the painted slices
  through the CT window, as it would be were it a CT model (the start is relabelled CT to get that);
* ``tuned_only``: as ``product``, but with averaging the start turned off in the settings;
* ``start``: the shipped MRI model's networks alone with CT normalisation, not trained on the paint;
* ``mri_normalisation``: the fill as it was before the thirteenth session: the MRI model's own intensity
  normalisation kept, the start averaged in whenever it scored 0.8 on the painted slices; its model said
  MRI and refused this CT, so it runs with the modality check off;
* ``scratch``: ``FILL_RECIPE``'s from-scratch schedule on the painted slices alone.

The painted slices are pasted into every fill. Scored: Dice on the unpainted slices, and Dice, HD95 and
ASSD of the filled volume. One JSON file per (k, mode) in ``--results``; ``--table`` prints them:

    python bench/ct_fill.py --k 5 10 20 30 40 --modes mci product with_start tuned_only start mri_normalisation scratch
    python bench/ct_fill.py --results docs/accuracy_results/ct_fill --table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.accuracy import contour_interpolation, metrics_row  # noqa: E402
from bench.speed import machine_description  # noqa: E402
from LiverUNetLib.fill_recipe import FILL_RECIPE  # noqa: E402
from LiverUNetLib.image_io import read_image  # noqa: E402
from LiverUNetLib.inference import InferenceConfig, segment_volume  # noqa: E402
from LiverUNetLib.labels import sparse_label_from_mask  # noqa: E402
from LiverUNetLib.model_file import default_model_path, load_model  # noqa: E402
from LiverUNetLib.preprocessing import Modality  # noqa: E402
from LiverUNetLib.training import TrainConfig, TrainingCase, train  # noqa: E402
from LiverUNetLib.volume import Volume  # noqa: E402

CT_SAMPLE = ROOT.parent / "shared" / "data" / "chaos-ct-sample"
MODES = ("mci", "product", "with_start", "tuned_only", "start", "mri_normalisation", "scratch")


def load_ct_sample() -> tuple[Volume, Volume]:
    image = read_image(CT_SAMPLE / "dicom")
    reference = read_image(CT_SAMPLE / "liver_gt.nii.gz")
    return image, reference.with_array((reference.array > 0).astype(np.uint8))


def fill(mode: str, image: Volume, painted, liver: Volume, work: Path) -> np.ndarray:
    """The liver mask one mode gives, before the painted slices are pasted in."""
    if mode == "mci":
        return contour_interpolation(liver, painted.annotated)
    shipped = load_model(default_model_path())
    as_ct = replace(shipped, preprocess=replace(shipped.preprocess, modality=Modality.CT))  # the CT window
    if mode == "start":
        return segment_volume(image, as_ct, InferenceConfig(device="cpu")).mask.array
    # "with_start": the start relabelled CT, so the guard compares it with the floor instead of leaving it out
    settings = {**FILL_RECIPE.train_settings(fine_tune=mode != "scratch"), "device": "cpu"}
    if mode == "mri_normalisation":
        settings["modality"] = Modality.MRI.value
    if mode == "tuned_only":
        settings["keep_start_networks"] = False
    init = {"scratch": None, "with_start": as_ct}.get(mode, default_model_path())
    model_path = work / f"ct_fill_{mode}.pt"
    train([TrainingCase("painted slices", image, painted)], TrainConfig(**settings), model_path,
          init_model=init, resume=False,
          progress=lambda event: print("  ", event.message, flush=True) if "starting network" in event.message else None)
    config = InferenceConfig(device="cpu", allow_modality_mismatch=mode == "mri_normalisation")
    mask = segment_volume(image, model_path, config).mask.array
    model_path.unlink(missing_ok=True)
    return mask


def run(k_values: list[int], modes: list[str], results: Path, threads: Optional[int]) -> None:
    if threads:
        torch.set_num_threads(threads)
    image, liver = load_ct_sample()
    dense = sparse_label_from_mask(image, liver, dense=True)
    axis = image.slice_axis()
    results.mkdir(parents=True, exist_ok=True)
    for k in k_values:
        painted = dense.keep_every_k(k)
        unpainted = np.setdiff1d(np.arange(image.array.shape[axis]), painted.annotated)
        index = [slice(None)] * 3
        index[axis] = painted.annotated
        for mode in modes:
            out = results / f"ct_fill_k{k}_{mode}.json"
            if out.exists():
                continue
            started = time.perf_counter()
            filled = fill(mode, image, painted, liver, results).astype(np.uint8)
            filled[tuple(index)] = liver.array[tuple(index)]  # painted slices stay as painted
            row = metrics_row(liver, liver.with_array(filled), unpainted)
            record = {"protocol": "ct_fill", "data": "CHAOS CT sample", "k": k, "mode": mode,
                      "painted": painted.annotated.tolist(), "seconds": round(time.perf_counter() - started, 1),
                      "machine": machine_description(), **row}
            out.write_text(json.dumps(record, indent=1))
            print(f"ct fill k={k} {mode}: dice_unpainted={row['dice_scored_slices']:.4f} dice={row['dice']:.4f} "
                  f"hd95={row['hd95_mm']:.1f} mm ({record['seconds']} s)", flush=True)


def table(results: Path) -> str:
    """The measured fills as a markdown table: Dice on the unpainted slices (HD95 of the filled volume)."""
    records = [json.loads(path.read_text()) for path in sorted(results.glob("ct_fill_k*_*.json"))]
    k_values = sorted({r["k"] for r in records})
    cells = {(r["mode"], r["k"]): f"{r['dice_scored_slices']:.3f} ({r['hd95_mm']:.1f} mm)" for r in records}
    painted = {r["k"]: len(r["painted"]) for r in records}
    lines = ["| fill | " + " | ".join(f"k={k} ({painted[k]} painted)" for k in k_values) + " |",
             "|---|" + "---|" * len(k_values)]
    for mode in MODES:
        if any((mode, k) in cells for k in k_values):
            lines.append(f"| {mode} | " + " | ".join(cells.get((mode, k), "") for k in k_values) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "ct_fill")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--table", action="store_true", help="print the measured fills as a markdown table")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.results))
        return 0
    if not CT_SAMPLE.is_dir():
        parser.error(f"{CT_SAMPLE} is missing: the CHAOS CT sample is needed (../shared/data)")
    run(args.k, args.modes, args.results, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
