"""Does averaging several CV runs' fold models help a held-out subject? (ensembling within a fold)

For each fold, the dense (k=1) fold models of the given recipe tags, all of which never saw the fold's
held-out subjects, are put into one model file whose probabilities are averaged, exactly as the shipped
model averages its networks. Each held-out subject is scored by every single model and by the ensemble::

    python bench/ensemble_gain.py --tags e120 e120_seed1 --folds 2 4
    python bench/ensemble_gain.py --tags e120 e240 --output docs/accuracy_results/ensemble/e120_e240.json

The tags must share the network and preprocessing (same input slices, spacing, channels).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.accuracy import FOLDS, SUBJECTS, fold_model_path, fold_of, load_subject, mask_dice  # noqa: E402
from LiverUNetLib.inference import InferenceConfig, segment_volume  # noqa: E402
from LiverUNetLib.model_file import LiverModel, load_model, save_model  # noqa: E402


def fold_ensemble(results: Path, tags: list[str], fold: int, destination: Path) -> Path:
    """One model file holding the dense fold-``fold`` networks of every tag."""
    models = [load_model(fold_model_path(results, 1, tag, fold)) for tag in tags]
    first = models[0]
    for tag, model in zip(tags, models):
        if model.network_config != first.network_config or model.preprocess != first.preprocess:
            raise SystemExit(f"tag {tag!r} has another network or preprocessing than {tags[0]!r}; cannot average them")
    ensemble = LiverModel([net for m in models for net in m.networks], first.network_config, first.preprocess)
    save_model(ensemble, destination)
    return destination


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", nargs="+", required=True, help="recipe tags of dense CV runs ('' for the 40-epoch default)")
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(FOLDS)))
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "accuracy")
    parser.add_argument("--output", type=Path, help="write the per-subject Dice as JSON here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for fold in args.folds:
            ensemble = fold_ensemble(args.results, args.tags, fold, Path(scratch) / f"fold{fold}.pt")
            for subject in (s for s in SUBJECTS if fold_of(s) == fold):
                image, _, liver = load_subject(subject)

                def dice(model: Path) -> float:
                    return mask_dice(liver.array > 0, segment_volume(image, model, InferenceConfig(device="cpu")).mask.array > 0)

                row = {tag or "e40": dice(fold_model_path(args.results, 1, tag, fold)) for tag in args.tags}
                row["ensemble"] = dice(ensemble)
                rows[subject] = row
                print(f"fold {fold} subject {subject}: " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    columns = list(next(iter(rows.values())))
    summary = {c: round(float(np.mean([r[c] for r in rows.values()])), 4) for c in columns}
    print("mean: " + "  ".join(f"{c} {v:.4f}" for c, v in summary.items()))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"tags": args.tags, "folds": args.folds, "mean_dice": summary,
                                           "subjects": {s: {c: round(v, 4) for c, v in r.items()} for s, r in rows.items()}},
                                          indent=1) + "\n")


if __name__ == "__main__":
    main()
