""""Paint next here", measured: from every k-th liver slice painted, N more slices are painted, chosen by the
fill's uncertainty (``SuggestionRule.LEAST_SURE``) or as the middles of the largest gaps
(``SuggestionRule.LARGEST_GAPS``), same N; the volume is filled again and scored.

The fill is *Fill from painted slices* as the effect runs it, ``LiverUNetLib.fill.fill_from_painted`` with
``FILL_RECIPE``, from the fold network of the shipped model that never saw the subject (CHAOS MRI, BTCV), or from
the shipped CT model (the CHAOS CT sample, which no CT network saw); the added slices are painted from the manual
reference. Scored: Dice on the slices unpainted under both rules (the same slices for both), on each rule's own
unpainted slices, and of the whole filled volume. One JSON per subject in ``fill/``, with the recipe it ran;
``fill_6_epochs/`` holds the same comparison with the recipe's earlier 6 fine-tuning epochs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Union

import numpy as np

from bench.quality_cases import SHARED, fold_network, held_out_subjects
from LiverUNetLib.fill import fill_from_painted
from LiverUNetLib.fill_recipe import FILL_RECIPE
from LiverUNetLib.image_io import read_image
from LiverUNetLib.labels import SparseLabel, sparse_label_from_mask
from LiverUNetLib.model_file import LiverModel, load_model
from LiverUNetLib.shipped_models import shipped_model_path
from LiverUNetLib.slice_suggestions import SuggestionRule, suggest_slices
from LiverUNetLib.volume import Volume

FOLDERS = {"fill": "the fill's recipe", "fill_6_epochs": "the fill's recipe with 6 fine-tuning epochs"}

Start = Union[LiverModel, Path]


def fill(image: Volume, painted: SparseLabel, start: Start) -> tuple[np.ndarray, list[float]]:
    """The filled mask (painted slices as painted) and the fill's expected wrong voxels per slice."""
    result = fill_from_painted(image, painted, start, FILL_RECIPE, device="cpu")
    return result.mask.array > 0, list(result.quality.slice_uncertainty)


def _per_slice(mask: np.ndarray, reference: np.ndarray, axis: int) -> dict[str, list[float]]:
    """Per-slice overlap and sizes, so Dice on any set of slices can be computed afterwards."""
    others = tuple(a for a in range(3) if a != axis)
    return {"overlap": (mask & reference).sum(axis=others).astype(float).tolist(),
            "mask": mask.sum(axis=others).astype(float).tolist(),
            "reference": reference.sum(axis=others).astype(float).tolist()}


def dice_on(per_slice: dict[str, list[float]], slices: list[int]) -> float:
    overlap = sum(per_slice["overlap"][i] for i in slices)
    total = sum(per_slice["mask"][i] + per_slice["reference"][i] for i in slices)
    return 2 * overlap / total if total else 1.0


def with_added(dense: SparseLabel, painted: SparseLabel, added: list[int]) -> SparseLabel:
    """``painted`` plus the manual reference on the ``added`` slices."""
    keep = np.union1d(painted.annotated, added).astype(np.int64)
    mask = np.zeros_like(dense.mask)
    index: list[Any] = [slice(None)] * 3
    index[dense.slice_axis] = keep
    mask[tuple(index)] = dense.mask[tuple(index)]
    return SparseLabel(mask, keep, dense.slice_axis)


def run_subject(name: str, image: Volume, liver: Volume, start: Start, k: int, added_counts: list[int],
                out: Path) -> None:
    started = time.perf_counter()
    reference = liver.array > 0
    dense = sparse_label_from_mask(image, liver, dense=True)
    axis = dense.slice_axis
    painted = dense.keep_every_k(k)
    base_mask, uncertainty = fill(image, painted, start)
    record: dict[str, Any] = {"subject": name, "k": k, "recipe": FILL_RECIPE.train_settings(fine_tune=True),
                              "painted": painted.annotated.tolist(),
                              "slices": int(image.array.shape[axis]), "base": _per_slice(base_mask, reference, axis),
                              "base_uncertainty": uncertainty, "added": {}}
    count = int(image.array.shape[axis])
    for n in added_counts:
        entry: dict[str, Any] = {}
        for rule in SuggestionRule:
            chosen = suggest_slices(painted.annotated.tolist(), count, uncertainty, n, rule)
            mask, _ = fill(image, with_added(dense, painted, chosen), start)
            entry[rule.value] = {"chosen": chosen, **_per_slice(mask, reference, axis)}
        record["added"][str(n)] = entry
        print(f"  {name} +{n}: " + ", ".join(f"{rule} {e['chosen']}" for rule, e in entry.items()), flush=True)
    record["seconds"] = round(time.perf_counter() - started, 1)
    out.write_text(json.dumps(record))
    print(f"fill {name} done in {record['seconds']} s", flush=True)


def run_fills(results: Path, mri: list[str], btcv: list[str], ct_sample: bool, k: int, added: list[int]) -> None:
    folder = results / "fill"
    folder.mkdir(parents=True, exist_ok=True)
    models: dict[str, LiverModel] = {}
    wanted = {("mri", s) for s in mri} | {("ct", s) for s in btcv}
    for subject in held_out_subjects(tuple(sorted({d for d, _ in wanted}))):
        if (subject.dataset, subject.name) not in wanted:
            continue
        out = folder / f"{subject.dataset}_{subject.name}_k{k}.json"
        if out.exists():
            continue
        if subject.dataset not in models:
            models[subject.dataset] = load_model(shipped_model_path(subject.dataset))
        image, liver = subject.load()
        run_subject(f"{subject.dataset} {subject.name}", image, liver, fold_network(models[subject.dataset], subject.fold),
                    k, added, out)
    out = folder / f"chaos_ct_k{k}.json"
    if ct_sample and not out.exists():
        image = read_image(SHARED / "chaos-ct-sample" / "dicom")
        reference = read_image(SHARED / "chaos-ct-sample" / "liver_gt.nii.gz")
        run_subject("CHAOS CT sample", image, reference.with_array((reference.array > 0).astype(np.uint8)),
                    shipped_model_path("ct"), k, added, out)


def fill_table_rows(results: Path, folder: str = "fill") -> list[dict[str, Any]]:
    """Per subject and N: Dice of both rules on the slices unpainted under both, on their own unpainted slices,
    and of the whole volume."""
    rows = []
    for path in sorted((results / folder).glob("*.json")):
        record = json.loads(path.read_text())
        painted = set(record["painted"])
        for n, entry in record["added"].items():
            rules = list(entry)
            chosen = {rule: set(entry[rule]["chosen"]) for rule in rules}
            common = [i for i in range(record["slices"]) if i not in painted and all(i not in c for c in chosen.values())]
            row: dict[str, Any] = {"subject": record["subject"], "added": int(n),
                                   "base_common": dice_on(record["base"], common)}
            for rule in rules:
                own = [i for i in range(record["slices"]) if i not in painted and i not in chosen[rule]]
                row[rule] = {"chosen": entry[rule]["chosen"], "common": dice_on(entry[rule], common),
                             "own": dice_on(entry[rule], own), "volume": dice_on(entry[rule], list(range(record["slices"])))}
            rows.append(row)
    return rows
