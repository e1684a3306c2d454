"""*Fill from painted slices* on CHAOS MRI, run exactly as the product runs it: ``fill_from_painted``.

Each CHAOS T2-SPIR subject is painted on every k-th liver slice (``SparseLabel.keep_every_k``) and filled by
``LiverUNetLib.fill.fill_from_painted`` with a :class:`FillRecipe`, starting from the network of the shipped
MRI ensemble that never saw the subject: the shipped model is the 5 fold models of the cross-validation
(``bench/accuracy.py ship``), network ``i`` the fold ``i`` model, so subject ``s`` starts from network
``fold_of(s)`` alone (the fold models were shipped in float16, so these starts are the CV models rounded to
float16). Scored: Dice on the unpainted slices (the painted ones are pasted in), Dice, HD95 and ASSD of the
filled volume, the fill's wall-clock seconds and the process's CPU seconds (robust to other processes on a
shared machine). One JSON file per (tag, k, subject) in ``--results``; ``--table`` prints them::

    python bench/mri_fill.py --threads 1 --results runs/fill_speed --k 3 5 10 --tag today --set finetune_epochs=6
    python bench/mri_fill.py --threads 1 --results runs/fill_speed --k 5 --subjects 3 5 15 21 38 --tag e2 --set finetune_epochs=2
    python bench/mri_fill.py --results runs/fill_speed --table

``--set FIELD=VALUE`` changes a ``FillRecipe`` field, or adds a ``TrainConfig`` setting to the recipe's
overrides; no ``--set`` runs the shipped ``FILL_RECIPE``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.accuracy import SUBJECTS, fold_of, load_subject, metrics_row  # noqa: E402
from LiverUNetLib.fill import fill_from_painted  # noqa: E402
from LiverUNetLib.fill_recipe import FILL_RECIPE, FillRecipe  # noqa: E402
from LiverUNetLib.labels import SparseLabel  # noqa: E402
from LiverUNetLib.model_file import LiverModel, default_model_path, load_model  # noqa: E402
from LiverUNetLib.volume import Volume  # noqa: E402


def recipe_from_sets(pairs: list[str]) -> FillRecipe:
    """``["finetune_epochs=2", "crop_size=96"]`` -> ``FILL_RECIPE`` with those ``FillRecipe`` fields changed
    (typed) and any other key added to its TrainConfig overrides (a JSON value: 96, true, 0.5)."""
    values = {f.name: getattr(FILL_RECIPE, f.name) for f in fields(FillRecipe) if f.name != "overrides"}
    changed: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects FIELD=VALUE; got {pair!r}")
        if key in values:
            kind = type(values[key])
            changed[key] = text.lower() in ("1", "true", "yes") if kind is bool else kind(text)
        else:
            overrides[key] = json.loads(text)
    recipe = replace(FILL_RECIPE, **changed)
    return recipe.with_overrides(overrides) if overrides else recipe


def recipe_record(recipe: FillRecipe) -> dict[str, Any]:
    """The recipe as plain JSON values, its overrides included."""
    data = asdict(recipe)
    data["overrides"] = dict(recipe.overrides)
    return data


def fold_start(subject: str, shipped: Optional[LiverModel] = None) -> LiverModel:
    """The shipped MRI ensemble's network that never saw ``subject`` (its CV fold model), alone."""
    shipped = shipped or load_model(default_model_path())
    network = shipped.networks[fold_of(subject)]
    model = LiverModel([network], shipped.network_config, shipped.preprocess)
    model.card.name = f"CHAOS MRI fold {fold_of(subject)} model (shipped network {fold_of(subject)})"
    return model


def cpu_seconds() -> float:
    """CPU seconds this process has used (user + system, all threads): with one torch thread, what a fill
    costs even while other processes share the cores (wall-clock time then depends on them)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_fill(image: Volume, painted: SparseLabel, start: Any, recipe: FillRecipe, device: str = "cpu") -> tuple[Any, float, float]:
    """``fill_from_painted`` and its wall-clock and process CPU seconds."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fill_from_painted(image, painted, start, recipe, device=device)
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def score(liver: Volume, filled: np.ndarray, painted: SparseLabel) -> dict[str, float]:
    """Dice on the unpainted slices and of the whole filled volume (metrics_row)."""
    axis = liver.slice_axis()
    unpainted = np.setdiff1d(np.arange(liver.array.shape[axis]), painted.annotated)
    return metrics_row(liver, liver.with_array(filled), unpainted)


def run(k_values: list[int], subjects: list[str], recipe: FillRecipe, tag: str, results: Path) -> None:
    from bench.speed import machine_description

    results.mkdir(parents=True, exist_ok=True)
    shipped = load_model(default_model_path())
    for k in k_values:
        for subject in subjects:
            out = results / f"mri_fill_{tag}_k{k}_s{subject}.json"
            if out.exists():
                continue
            image, dense, liver = load_subject(subject)
            painted = dense.keep_every_k(k)
            result, wall, cpu = timed_fill(image, painted, fold_start(subject, shipped), recipe)
            row = score(liver, result.mask.array, painted)
            record = {"protocol": "mri_fill", "data": f"CHAOS MRI subject {subject}", "subject": subject, "k": k,
                      "tag": tag, "recipe": recipe_record(recipe), "painted": painted.annotated.tolist(),
                      "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "device": result.device,
                      "machine": machine_description(), **row}
            out.write_text(json.dumps(record, indent=1))
            print(f"mri fill {tag} k={k} subject={subject}: dice_unpainted={row['dice_scored_slices']:.4f} "
                  f"({wall:.1f} s, cpu {cpu:.1f} s)", flush=True)


def summary(results: Path, pattern: str = "mri_fill_*.json") -> dict[tuple[str, int], dict[str, Any]]:
    """(tag, k) -> mean Dice on the unpainted slices, mean wall and CPU seconds, subjects, over the records."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for path in sorted(results.glob(pattern)):
        record = json.loads(path.read_text())
        grouped.setdefault((record["tag"], record["k"]), []).append(record)
    return {key: {"dice_unpainted": float(np.mean([r["dice_scored_slices"] for r in rs])),
                  "seconds": float(np.mean([r["seconds"] for r in rs])),
                  "cpu_seconds": float(np.mean([r["cpu_seconds"] for r in rs])),
                  "subjects": sorted((r["subject"] for r in rs), key=int)}
            for key, rs in grouped.items()}


def table(results: Path) -> str:
    lines = ["| recipe (tag) | k | subjects | Dice, unpainted slices | seconds (wall) | CPU seconds |", "|---|---|---|---|---|---|"]
    for (tag, k), row in sorted(summary(results).items()):
        lines.append(f"| {tag} | {k} | {len(row['subjects'])} | {row['dice_unpainted']:.4f} | {row['seconds']:.1f} | "
                     f"{row['cpu_seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--subjects", nargs="+", default=SUBJECTS)
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "mri_fill")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                        help="a FillRecipe field, or a TrainConfig setting for its overrides (repeatable)")
    parser.add_argument("--tag", default="shipped", help="names the recipe variant in the record files")
    parser.add_argument("--table", action="store_true", help="print the measured fills as a markdown table")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.results))
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    run(args.k, args.subjects, recipe_from_sets(args.sets), args.tag, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
