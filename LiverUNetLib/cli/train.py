"""``liverunet train``: train or fine-tune a model from images and (possibly sparse) liver labels."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

from ..errors import LiverUNetError
from ..train_schedule import TRAIN_SCHEDULE
from .common import EXIT_OK, image_files, match_cases, positive_float, positive_int, warn_reading_notes
from .progress_bar import ProgressBar


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this command's options to the ``liverunet`` subcommands."""
    tr = sub.add_parser("train", parents=[common], help="train or fine-tune a liver model",
                        description="Train a model from images and (possibly sparse) liver labels. "
                        "Labels are label images on the image grids or .seg.nrrd files from Slicer; "
                        "a slice holding any liver voxel counts as annotated. Give files in matching "
                        "order, or one folder each (cases matched by file name).")
    tr.add_argument("--images", nargs="+", required=True, metavar="I")
    tr.add_argument("--labels", nargs="+", required=True, metavar="L")
    tr.add_argument("-o", "--output", required=True, metavar="MODEL")
    tr.add_argument("--label-value", type=int, metavar="N",
                    help="liver value in label images (default: the non-zero voxels, when they all hold one value; "
                    "a label with several values is refused without it)")
    tr.add_argument("--segment", metavar="NAME", help="liver segment name in .seg.nrrd labels (default: Liver)")
    tr.add_argument("--empty-label-value", type=int, metavar="N",
                    help="value marking painted slices that hold no liver (those slices teach background)")
    tr.add_argument("--every-k", type=positive_int, default=1, metavar="K",
                    help="keep the label only on every K-th liver slice (simulates sparse painting)")
    tr.add_argument("--dense", action="store_true",
                    help="labels are complete: every slice counts as annotated, empty ones too")
    tr.add_argument("--unpainted-slices-unknown", action="store_true",
                    help="learn nothing from unpainted slices, not even those farther beyond the painted "
                    "ones than the painting interval (by default those count as liver-free); use it when "
                    "the painting does not reach the liver's top and bottom")
    tr.add_argument("--epochs", type=positive_int, metavar="N",
                    help=f"training length (default: {TRAIN_SCHEDULE.scratch_epochs} from scratch, "
                    f"{TRAIN_SCHEDULE.finetune_epochs} with --init, which starts from a model that already knows livers)")
    tr.add_argument("--folds", type=positive_int, metavar="K", help="k-fold ensemble (default 1)")
    tr.add_argument("--networks", type=positive_int, metavar="N",
                    help="networks per fold, from different random starts, averaged (default 1; N times "
                    "longer; 2 gained +0.007 Dice with every 5th slice painted)")
    tr.add_argument("--init", metavar="MODEL", help="fine-tune from this model file")
    tr.add_argument("--modality", choices=["auto", "mri", "ct"], default="auto",
                    help="the images the model is for, which sets its intensity normalisation; auto reads it "
                    "from the training images, also when fine-tuning (an MRI model tuned on CT becomes a CT model)")
    tr.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    tr.add_argument("--batch-size", type=positive_int, metavar="N")
    tr.add_argument("--base-channels", type=positive_int, metavar="N")
    tr.add_argument("--depth", type=positive_int, metavar="N")
    tr.add_argument("--context-slices", type=int, metavar="N", help="2.5D: neighbours on each side")
    tr.add_argument("--spacing", type=positive_float, metavar="MM", help="in-plane spacing the network works at")
    tr.add_argument("--samples-per-epoch", type=positive_int, metavar="N")
    tr.add_argument("--patience", type=positive_int, metavar="N",
                    help="early-stopping patience (epochs), counted only in the last 45 %% of the epochs and "
                    "only with a validation hold-out (five cases or more; default 15)")
    tr.add_argument("--learning-rate", type=positive_float, metavar="LR",
                    help=f"peak of the one-cycle schedule (default: {TRAIN_SCHEDULE.scratch_learning_rate:g} from "
                    f"scratch, {TRAIN_SCHEDULE.finetune_learning_rate:g} with --init, whatever --epochs says)")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--settings", metavar="JSON",
                    help="more training settings as a JSON object or a .json file (TrainConfig "
                    "fields, e.g. '{\"crop_size\": 128}'); the options above win")
    tr.add_argument("--no-resume", action="store_true", help="ignore an earlier interrupted run")
    tr.set_defaults(func=run)



def _pair_training_files(images: list[str], labels: list[str]) -> list[tuple[str, Path, Path]]:
    from ..image_io import strip_ending

    image_paths = [Path(p).expanduser() for p in images]
    label_paths = [Path(p).expanduser() for p in labels]
    for p in image_paths + label_paths:
        if not p.exists():
            raise LiverUNetError(f"Not found: {p}. Check the path.")
    if len(image_paths) == 1 and len(label_paths) == 1 and image_paths[0].is_dir() and label_paths[0].is_dir():
        images_found = image_files(image_paths[0])
        if images_found:  # folders of files: match by name
            label_files = image_files(label_paths[0])
            if not label_files:
                raise LiverUNetError(f"No label files in {label_paths[0]}.")
            return match_cases(images_found, label_files, ("image", "label"))
    if len(image_paths) != len(label_paths):
        raise LiverUNetError(
            f"{len(image_paths)} images but {len(label_paths)} labels: give one label per image, "
            "in the same order (or one folder of each)."
        )
    pairs = []
    seen: dict[str, int] = {}
    for image, label in zip(image_paths, label_paths):
        if label.is_dir():
            raise LiverUNetError(f"The label {label} is a folder; give a label file for each image.")
        name = strip_ending(image) if image.is_file() else image.name
        seen[name] = seen.get(name, 0) + 1
        pairs.append((name if seen[name] == 1 else f"{name}_{seen[name]}", image, label))
    return pairs


def _settings_argument(text: Optional[str]) -> dict[str, Any]:
    if not text:
        return {}
    source = "--settings"
    if not text.lstrip().startswith("{"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise LiverUNetError(f"--settings {text}: not a JSON object and no such file.")
        source, text = str(path), path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise LiverUNetError(f"{source} is not valid JSON ({error.msg}, line {error.lineno}).") from None
    if not isinstance(data, dict):
        raise LiverUNetError(f"{source} must be a JSON object of training settings.")
    return data


def _check_train_output(text: str, pairs: list[tuple[str, Path, Path]], init: Optional[str]) -> Path:
    """The model path ``-o`` names, refused before any work when it is not a ``.pt`` file name,
    is one of the training inputs (image, label or ``--init`` model) or cannot be written."""
    from ..image_io import check_output_name, check_output_writable

    output = Path(text).expanduser()
    check_output_name(output)  # before anything stats it (a stat fails on a name too long)
    if output.is_dir():
        raise LiverUNetError(f"--output {output} is a folder; give a model file name such as liver.pt.")
    if output.suffix.lower() != ".pt":
        raise LiverUNetError(
            f"--output {output.name} does not end in .pt; a model file name such as liver.pt is needed "
            "(this also keeps a typo from overwriting an image or label)."
        )
    inputs = [(what, Path(p)) for _n, image, label in pairs for what, p in (("image", image), ("label", label))]
    if init:
        inputs.append(("--init model", Path(init).expanduser()))
    for what, p in inputs:
        if p.exists() and output.exists() and output.samefile(p):
            raise LiverUNetError(f"--output {output} is the training {what}; choose another model file name.")
    return check_output_writable(output)


#: Settings a fine-tuned model takes from its --init model, which the options cannot change.
_INIT_FIXES = {"depth": "depth", "base_channels": "base_channels", "context_slices": "context_slices",
               "in_plane_spacing_mm": "spacing"}


def _train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The training settings of ``--settings`` and the options (the options win), checked before
    any case is loaded: types, --init conflicts and whether the network can fit in memory."""
    from ..training import TrainConfig
    from ..training_files import check_setting_types

    overrides: dict[str, Any] = {
        "epochs": args.epochs, "folds": args.folds, "networks_per_fold": args.networks, "device": args.device,
        "batch_size": args.batch_size, "base_channels": args.base_channels, "depth": args.depth,
        "context_slices": args.context_slices, "in_plane_spacing_mm": args.spacing,
        "samples_per_epoch": args.samples_per_epoch, "patience": args.patience,
        "learning_rate": args.learning_rate, "seed": args.seed,
    }
    settings = _settings_argument(args.settings)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    check_setting_types(settings)
    fixed = [f"--{attr.replace('_', '-')}" if getattr(args, attr) is not None else f"{key} in --settings"
             for key, attr in _INIT_FIXES.items() if key in settings]
    if args.init and fixed:
        raise LiverUNetError(
            f"{', '.join(fixed)} cannot change a model fine-tuned with --init: it keeps the network and "
            "preprocessing of the model it starts from. Leave them out, or train from scratch without --init."
        )
    if not args.init:
        _check_training_fits(TrainConfig.from_dict(settings))
    return settings


def _check_training_fits(config: Any) -> None:
    """Refuse, before loading anything, a network whose training needs more memory than the
    machine has (a rough estimate: networks.unet.training_memory_bytes)."""
    from ..networks.unet import training_memory_bytes

    need = training_memory_bytes(config.network_config(), config.batch_size, config.crop_size)
    have, where = _training_memory(str(getattr(config.device, "value", config.device)))
    if have and need > have:
        raise LiverUNetError(
            f"Training this network (depth {config.depth}, base {config.base_channels} channels, batch "
            f"{config.batch_size}, {config.crop_size}-pixel crops) needs about {need / 2**30:,.0f} GiB; the "
            f"{where} has {have / 2**30:,.0f} GiB. Use a smaller --depth (the recipe's is 4), --base-channels "
            "or --batch-size."
        )


def _training_memory(device: str) -> tuple[int, str]:
    """(bytes, what) of the memory training on ``device`` can use: the GPU's when CUDA will run
    it, else the machine's RAM; (0, "") when unknown."""
    try:
        import torch

        if device in ("auto", "cuda") and torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory), "GPU"
    except Exception:  # noqa: BLE001 - no estimate is better than a crash here
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "machine"
    except (ValueError, OSError, AttributeError):
        return 0, ""


def run(args: argparse.Namespace, bar: ProgressBar) -> int:
    from ..training_files import load_training_case

    from ..training import TrainConfig, train
    from ..training_distributed import is_writer

    speaks = is_writer()  # under torchrun only rank 0 prints, as only it reports progress and writes the model
    pairs = _pair_training_files(args.images, args.labels)
    output = _check_train_output(args.output, pairs, args.init)
    settings = _train_settings(args)
    cases = []
    for number, (name, image_path, label_path) in enumerate(pairs, start=1):
        if bar.enabled and speaks:
            print(f"loading case {number}/{len(pairs)}: {name}", file=sys.stderr)
        try:
            cases.append(
                load_training_case(
                    name, image_path, label_path, args.label_value, args.segment,
                    args.empty_label_value, args.every_k, args.dense,
                )
            )
        except LiverUNetError as error:
            raise LiverUNetError(f"case {name}: {error}") from None
        warn_reading_notes(name, cases[-1].image)
    if args.unpainted_slices_unknown:
        settings["liver_free_beyond_painting"] = False
    if args.modality != "auto":
        settings["modality"] = args.modality
    elif not settings.get("modality"):
        from ..preprocessing import modality_of_images

        settings["modality"] = modality_of_images([c.image for c in cases]).value
    if settings.get("folds", 1) > len(cases):
        raise LiverUNetError(f"--folds {settings['folds']} needs at least as many cases; got {len(cases)}.")
    config = TrainConfig.from_dict(settings)
    annotated = sum(c.label.annotated_count for c in cases)
    if speaks:
        print(
            f"training on {len(cases)} case(s), {annotated} annotated slices, modality "
            f"{settings['modality'].upper()}", file=sys.stderr,
        )
    result = train(cases, config, output, init_model=args.init, progress=bar, resume=not args.no_resume)
    bar.finish()
    dice = "n/a" if result.validation_dice is None else f"{result.validation_dice:.3f}"
    if speaks:
        print(f"wrote {result.model_path} (validation Dice {dice}, epochs {result.epochs_run})")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
