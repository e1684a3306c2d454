"""*Fill from painted slices* on CT: a CT painted every k-th liver slice, filled.

The CHAOS CT sample (78 slices of 2 mm, the liver on 66; another hospital than the CT model's BTCV data) is
painted every k-th liver slice (k = 5, 10, 20, 30, 40: 1 to 8 cm apart, 14 down to 2 painted slices), and
with ``--btcv`` BTCV subjects likewise, each filled from the CT cross-validation fold model that never saw it
(``bench/accuracy_ct.py``). Fills:

* ``mci``: ITK's morphological contour interpolation (Slicer's "Fill between slices");
* ``ct_model``: exactly what the effect runs on a CT, ``LiverUNetLib.fill.fill_from_painted``: the recipe
  (``FILL_RECIPE``, or ``--set`` changes to it, named by ``--tag``) fine-tuning the shipped CT model (one of
  its networks), the fine-tuned network alone (``TrainConfig.keep_start_networks_on_ct`` off); the default
  inference with smoothing across slices;
* ``ct_with_start``: as ``ct_model``, averaged with the network it started from when that scores Dice >= 0.8
  on the painted slices, as MRI fills are;
* ``ct_model_alone``: the shipped CT model, not trained on the paint (painted slices pasted in);

and, starting from the shipped MRI model (the fill a build without a CT model gives):

* ``product``: ``FILL_RECIPE`` fine-tuning the shipped MRI model; the fine-tuned model is a CT model with CT
  intensity normalisation; a start made for another modality is never averaged in, so here the fine-tuned
  network alone;
* ``with_start``: as ``product``, with the start averaged in whenever it scores 0.8 on the painted slices
  through the CT window, as it would be were it a CT model (the start is relabelled CT to get that);
* ``tuned_only``: as ``product``, but with averaging the start turned off in the settings;
* ``start``: the shipped MRI model's networks alone with CT normalisation, not trained on the paint;
* ``mri_normalisation``: the MRI model's own intensity normalisation kept, the start averaged in whenever it
  scored 0.8 on the painted slices; its model says MRI and refuses this CT, so it runs with the check off;
* ``scratch``: ``FILL_RECIPE``'s from-scratch schedule on the painted slices alone.

The painted slices are pasted into every fill. Scored: Dice on the unpainted slices, and Dice, HD95 and
ASSD of the filled volume, with the fill's wall-clock and process CPU seconds. One JSON file per (data, k,
mode, tag) in ``--results``; ``--table`` prints them:

    python bench/ct_fill.py --results docs/accuracy_results/ct_fill --k 5 10 15 20 30 40 --modes mci ct_model ct_with_start ct_model_alone
    python bench/ct_fill.py --results docs/accuracy_results/ct_fill --btcv 08 14 21 --k 5 10 --modes mci ct_model ct_with_start ct_model_alone
    python bench/ct_fill.py --results docs/accuracy_results/ct_fill --table
    python bench/ct_fill.py --threads 1 --results runs/fill_speed --k 10 20 --modes ct_model --tag e2 --set finetune_epochs=2
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
from bench.mri_fill import cpu_seconds, recipe_from_sets, recipe_record  # noqa: E402
from bench.speed import machine_description  # noqa: E402
from LiverUNetLib.fill import fill_from_painted  # noqa: E402
from LiverUNetLib.fill_recipe import FILL_RECIPE, FillRecipe  # noqa: E402
from LiverUNetLib.image_io import read_image  # noqa: E402
from LiverUNetLib.inference import InferenceConfig, segment_volume  # noqa: E402
from LiverUNetLib.labels import sparse_label_from_mask  # noqa: E402
from LiverUNetLib.model_file import default_model_path, load_model  # noqa: E402
from LiverUNetLib.preprocessing import Modality  # noqa: E402
from LiverUNetLib.shipped_models import shipped_model_path  # noqa: E402
from LiverUNetLib.training import TrainConfig, TrainingCase, train  # noqa: E402
from LiverUNetLib.volume import Volume  # noqa: E402

CT_SAMPLE = ROOT.parent / "shared" / "data" / "chaos-ct-sample"
MODES = ("mci", "ct_model", "ct_with_start", "ct_model_alone", "product", "with_start", "tuned_only", "start", "mri_normalisation",
         "scratch")


def load_ct_sample() -> tuple[Volume, Volume]:
    image = read_image(CT_SAMPLE / "dicom")
    reference = read_image(CT_SAMPLE / "liver_gt.nii.gz")
    return image, reference.with_array((reference.array > 0).astype(np.uint8))


def ct_start(subject: Optional[str]) -> Path:
    """The CT model a fill starts from: the shipped one for the CHAOS sample, for a BTCV subject the CT
    cross-validation's fold model that never saw it (the shipped ensemble trained on every BTCV subject)."""
    if subject is None:
        path = shipped_model_path("ct")
        if path is None:
            raise SystemExit("this build ships no CT model (LiverUNetLib/models/liver_ct_default.pt)")
        return path
    from bench.accuracy_ct import fold_of, model_path

    path = model_path("", fold_of(subject))
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run bench/accuracy_ct.py cv first")
    return path


def fill(mode: str, image: Volume, painted, liver: Volume, work: Path, subject: Optional[str] = None,
         recipe: FillRecipe = FILL_RECIPE) -> np.ndarray:
    """The liver mask one mode gives, before the painted slices are pasted in."""
    if mode == "mci":
        return contour_interpolation(liver, painted.annotated)
    if mode == "ct_model_alone":
        return segment_volume(image, ct_start(subject), InferenceConfig(device="cpu")).mask.array
    if mode in ("ct_model", "ct_with_start"):
        if mode == "ct_with_start":
            recipe = recipe.with_overrides({"keep_start_networks_on_ct": True})
        return fill_from_painted(image, painted, ct_start(subject), recipe, device="cpu",
                                 progress=lambda event: print("  ", event.message, flush=True)
                                 if "starting network" in event.message else None).mask.array
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


def load_btcv(subject: str) -> tuple[Volume, Volume]:
    from bench.accuracy_ct import load_subject

    image, liver, _ = load_subject(subject)
    return image, liver


def run(k_values: list[int], modes: list[str], results: Path, threads: Optional[int],
        subject: Optional[str] = None, recipe: FillRecipe = FILL_RECIPE, tag: str = "") -> None:
    """Fill the CHAOS CT sample (``subject`` None) or one BTCV subject at every k with every mode; ``recipe``
    (named by ``tag`` in the file names) is the one the ct_model and ct_with_start fills run."""
    if threads:
        torch.set_num_threads(threads)
    image, liver = load_ct_sample() if subject is None else load_btcv(subject)
    data, prefix = ("CHAOS CT sample", "ct_fill") if subject is None else (f"BTCV subject {subject}", f"ct_fill_btcv{subject}")
    dense = sparse_label_from_mask(image, liver, dense=True)
    axis = image.slice_axis()
    results.mkdir(parents=True, exist_ok=True)
    for k in k_values:
        painted = dense.keep_every_k(k)
        unpainted = np.setdiff1d(np.arange(image.array.shape[axis]), painted.annotated)
        index = [slice(None)] * 3
        index[axis] = painted.annotated
        for mode in modes:
            tuned = mode in ("ct_model", "ct_with_start")
            out = results / f"{prefix}_k{k}_{mode}{f'_{tag}' if tag and tuned else ''}.json"
            if out.exists():
                continue
            started, cpu = time.perf_counter(), cpu_seconds()
            filled = fill(mode, image, painted, liver, results, subject, recipe).astype(np.uint8)
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
            filled[tuple(index)] = liver.array[tuple(index)]  # painted slices stay as painted
            row = metrics_row(liver, liver.with_array(filled), unpainted)
            record = {"protocol": "ct_fill", "data": data, "k": k, "mode": mode,
                      **({"tag": tag, "recipe": recipe_record(recipe)} if tuned else {}),
                      "painted": painted.annotated.tolist(), "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
                      "machine": machine_description(), **row}
            out.write_text(json.dumps(record, indent=1))
            print(f"ct fill {data} k={k} {mode}{f' {tag}' if tag and tuned else ''}: dice_unpainted="
                  f"{row['dice_scored_slices']:.4f} dice={row['dice']:.4f} hd95={row['hd95_mm']:.1f} mm "
                  f"({record['seconds']} s, cpu {record['cpu_seconds']} s)", flush=True)


def table(results: Path, pattern: str = "ct_fill_k*_*.json") -> str:
    """The measured fills as a markdown table: Dice on the unpainted slices (HD95 of the filled volume).
    With several subjects (BTCV) a cell is their mean."""
    records = [json.loads(path.read_text()) for path in sorted(results.glob(pattern))]
    k_values = sorted({r["k"] for r in records})
    grouped: dict[tuple[str, int], list[dict]] = {}
    for r in records:  # a recipe variant (--tag) is a row of its own
        grouped.setdefault((r["mode"] + (f" ({r['tag']})" if r.get("tag") else ""), r["k"]), []).append(r)
    cells = {key: f"{np.mean([r['dice_scored_slices'] for r in rs]):.3f} ({np.mean([r['hd95_mm'] for r in rs]):.1f} mm)"
             for key, rs in grouped.items()}
    painted = {r["k"]: len(r["painted"]) for r in records}
    many = len({r["data"] for r in records if "data" in r}) > 1
    lines = ["| fill | " + " | ".join(f"k={k} ({'~' if many else ''}{painted[k]} painted)" for k in k_values) + " |",
             "|---|" + "---|" * len(k_values)]
    rows = sorted({name for name, _ in cells}, key=lambda name: (MODES.index(name.split(" ")[0]), name))
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(cells.get((row, k), "") for k in k_values) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "ct_fill")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--btcv", nargs="+", metavar="SUBJECT",
                        help="fill these BTCV subjects (00-29) instead of the CHAOS CT sample, each from its CV fold model")
    parser.add_argument("--table", action="store_true", help="print the measured fills as a markdown table")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                        help="change the fill recipe of ct_model and ct_with_start: a FillRecipe field, or a "
                        "TrainConfig setting for its overrides (repeatable)")
    parser.add_argument("--tag", default="", help="names the recipe variant (--set) in the record files")
    args = parser.parse_args(argv)
    if args.table:
        print("CHAOS CT sample:\n\n" + table(args.results))
        if list(args.results.glob("ct_fill_btcv*.json")):
            print("\nBTCV subjects held out of the CT model (mean):\n\n" + table(args.results, "ct_fill_btcv*_k*_*.json"))
        return 0
    if not CT_SAMPLE.is_dir():
        parser.error(f"{CT_SAMPLE} is missing: the CHAOS CT sample is needed (../shared/data)")
    for subject in args.btcv or [None]:
        run(args.k, args.modes, args.results, args.threads, subject, recipe_from_sets(args.sets), args.tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
