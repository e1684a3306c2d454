"""Does the fill's guard keep the starting network where it was measured, and drop it where it should?

The fill averages its fine-tuned network with the network it started from only when that start already
scores ``TrainConfig.keep_start_min_dice`` on the painted slices (``training.start_networks_worth_keeping``).
This prints that Dice for every CHAOS subject painted every k-th slice, with the CV fold model that never
saw the subject (what ``bench/accuracy.py densify`` fine-tunes from), and for the CHAOS CT sample with the
shipped MRI model (a start from another modality)::

    python bench/studies/start_network_check.py --output docs/accuracy_results/start_network_check.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.accuracy import SUBJECTS, fold_model_path, fold_of, load_subject  # noqa: E402
from LiverUNetLib.image_io import read_image  # noqa: E402
from LiverUNetLib.labels import sparse_label_from_mask  # noqa: E402
from LiverUNetLib.model_file import DEFAULT_MODEL_FILE, LiverModel, load_model  # noqa: E402
from LiverUNetLib.preprocessing import modality_of_images  # noqa: E402
from LiverUNetLib.training import (  # noqa: E402
    TrainConfig, TrainingCase, fine_tuning_preprocess, prepare_case, start_network_dice, with_liver_free_slices,
)
from LiverUNetLib.volume import Volume  # noqa: E402

CT_SAMPLE = ROOT.parent / "shared" / "data" / "chaos-ct-sample"


def start_dice(model: LiverModel, image: Volume, painted) -> float:
    """The Dice the guard compares with its floor: network 0 on the painted (and liver-free) slices,
    normalised for the image's own modality as ``train`` does (CT with the CT window; through its MRI
    normalisation the shipped MRI start scored 0.65-0.77 on the CHAOS CT sample's painted slices)."""
    case = with_liver_free_slices(TrainingCase("case", image, painted))
    prepared = prepare_case(case, fine_tuning_preprocess(model, modality_of_images([image])), torch.device("cpu"))
    return start_network_dice(model, 0, [prepared], torch.device("cpu"))[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "accuracy")
    parser.add_argument("--tag", default="e120_bw5", help="the dense CV run whose fold models the fill starts from")
    parser.add_argument("--k", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--output", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ct-only", action="store_true", help="only the CT sample (no CV fold models needed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    floor = TrainConfig().keep_start_min_dice
    record: dict = {"floor": floor, "tag": args.tag, "chaos_mri": {}, "ct_sample_with_shipped_mri_model": {}}
    for subject in [] if args.ct_only else SUBJECTS:
        image, dense, _ = load_subject(subject)
        model = load_model(fold_model_path(args.results, 1, args.tag, fold_of(subject)))
        for k in args.k:
            dice = start_dice(model, image, dense.keep_every_k(k))
            record["chaos_mri"].setdefault(f"k{k}", {})[subject] = round(dice, 4)
            print(f"MRI subject {subject} k={k}: start Dice {dice:.3f} ({'kept' if dice >= floor else 'dropped'})", flush=True)
    if (CT_SAMPLE / "dicom").is_dir():
        image = read_image(CT_SAMPLE / "dicom")
        liver = read_image(CT_SAMPLE / "liver_gt.nii.gz")
        dense = sparse_label_from_mask(image, liver.with_array((liver.array > 0).astype("uint8")), dense=True)
        shipped = load_model(DEFAULT_MODEL_FILE)
        for k in args.k:
            dice = start_dice(shipped, image, dense.keep_every_k(k))
            record["ct_sample_with_shipped_mri_model"][f"k{k}"] = round(dice, 4)
            print(f"CT sample k={k}, shipped MRI model: start Dice {dice:.3f} "
                  f"({'passes' if dice >= floor else 'below'} the floor; the fill leaves a start of another modality out)")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
