"""``liverunet segment``: segment the liver in image files, DICOM series or folders of them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from ..errors import CancelledError, LiverUNetError
from .common import (
    EXIT_OK,
    EXIT_USER_ERROR,
    failure_reason,
    image_files,
    positive_int,
    warn,
    warn_reading_notes,
)
from .progress_bar import ProgressBar


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this command's options to the ``liverunet`` subcommands."""
    seg = sub.add_parser("segment", parents=[common], help="segment the liver in images",
                         description="Segment the liver. INPUT is an image file, a DICOM series "
                         "folder, or a folder of image files. The output format follows OUT's "
                         "ending (.nii.gz, .nii, .nrrd, .mha, .seg.nrrd); several inputs or a folder "
                         "of images need OUT to be a folder.")
    seg.add_argument("inputs", nargs="+", metavar="INPUT")
    seg.add_argument("-o", "--output", required=True, metavar="OUT")
    seg.add_argument("-m", "--model", metavar="FILE",
                     help="model file (default: the shipped CT or MRI model, chosen by each image)")
    seg.add_argument("--modality", choices=["auto", "mri", "ct"], default="auto",
                     help="without --model: use the shipped model of this modality instead of telling it from "
                     "the image (its DICOM Modality, else its intensities)")
    seg.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    seg.add_argument("--tta", action="store_true", help="test-time augmentation (slower, smoother)")
    seg.add_argument("--probability", action="store_true",
                     help="also write the liver probability map next to each mask (<name>_probability)")
    seg.add_argument("--batch-size", type=positive_int, metavar="N", help="slices per batch")
    seg.add_argument("--format", default=".nii.gz", choices=[".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".nii"],
                     help="file format when OUT is a folder (default .nii.gz)")
    seg.add_argument("--no-largest-component", action="store_true",
                     help="keep every connected piece, not only the largest")
    seg.add_argument("--no-slice-smoothing", action="store_true",
                     help="threshold each slice's own probability, without averaging it with its neighbours")
    seg.add_argument("--allow-modality-mismatch", action="store_true",
                     help="run even when the image does not look like the model's modality")
    seg.set_defaults(func=run)



def _segment_jobs(inputs: list[str], output: str, fmt: str) -> list[tuple[str, Path, Path]]:
    """(display name, input, output file) for each case; every output is checked writable here,
    before any image is segmented."""
    from ..image_io import check_output_name, check_output_writable

    check_output_name(output)  # before anything stats it (a stat fails on a name too long)
    jobs = _segment_job_list(inputs, output, fmt)
    for _name, _source, target in jobs:
        check_output_writable(target)
    return jobs


def _without_own_outputs(files: list[Path]) -> list[Path]:
    """A folder's image files less those a segment run wrote there: ``<case>_liver<ending>`` and
    ``<case>_liver_probability<ending>`` next to ``<case>``, so segmenting a folder into itself
    twice does not segment its own masks."""
    from ..image_io import strip_ending

    stems = {strip_ending(f) for f in files}
    own = {f"{s}_liver{tail}" for s in stems for tail in ("", "_probability")}
    return [f for f in files if strip_ending(f) not in own]


def _segment_job_list(inputs: list[str], output: str, fmt: str) -> list[tuple[str, Path, Path]]:
    from ..image_io import file_ending, strip_ending
    from ..segmentation_file import check_mask_output

    cases: list[tuple[str, Path]] = []
    needs_folder = len(inputs) > 1
    for text in inputs:
        p = Path(text).expanduser()
        if not p.exists():
            raise LiverUNetError(f"Input not found: {p}. Check the path.")
        if p.is_dir():
            files = _without_own_outputs(image_files(p))
            if files:  # a folder of image files: one case each
                needs_folder = True
                cases.extend((strip_ending(f), f) for f in files)
            else:  # a DICOM series folder: one case
                cases.append((p.name or "dicom", p))
        else:
            cases.append((strip_ending(p), p))
    out = Path(output).expanduser()
    out_is_file = file_ending(out) in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
    if needs_folder or len(cases) > 1:
        if out_is_file or (out.exists() and not out.is_dir()):
            raise LiverUNetError(
                f"{len(cases)} images to segment need --output to be a folder, not the file {out.name}."
            )
        names: dict[str, int] = {}
        jobs = []
        for name, p in cases:
            names[name] = names.get(name, 0) + 1
            unique = name if names[name] == 1 else f"{name}_{names[name]}"
            jobs.append((p.name, p, out / f"{unique}_liver{fmt}"))
        return jobs
    name, p = cases[0]
    if out.is_dir() or not out_is_file:
        if not out.is_dir() and out.suffix:
            check_mask_output(out)  # raises with the list of endings
        return [(p.name, p, out / f"{name}_liver{fmt}")]
    check_mask_output(out)
    return [(p.name, p, out)]


def _probability_path(mask_path: Path) -> Path:
    from ..image_io import file_ending, strip_ending

    ending = file_ending(mask_path)
    ending = ".nrrd" if ending == ".seg.nrrd" else ending
    return mask_path.with_name(f"{strip_ending(mask_path)}_probability{ending}")


class ShippedModels:
    """The shipped models, loaded on first use; says which one each image gets and why."""

    def __init__(self, modality: Optional[str] = None) -> None:
        self.modality = modality  # None: each image's own
        self.loaded: dict[Path, object] = {}

    def for_image(self, volume, name: str):
        from ..model_file import choose_shipped_model, load_model

        choice = choose_shipped_model(volume, self.modality)
        if choice.path not in self.loaded:
            self.loaded[choice.path] = load_model(choice.path)
        print(f"{name}: using {choice.describe()}", file=sys.stderr)
        return self.loaded[choice.path]


def run(args: argparse.Namespace, bar: ProgressBar) -> int:
    from ..image_io import read_image, write_image
    from ..inference import InferenceConfig, segment_volume
    from ..model_file import load_model
    from ..segmentation_file import write_liver_mask

    jobs = _segment_jobs(args.inputs, args.output, args.format)
    # without --model each image gets the shipped model of its modality, each loaded once
    models = ShippedModels(None if args.modality == "auto" else args.modality) if args.model is None else None
    model = load_model(args.model) if args.model is not None else None
    config = InferenceConfig(
        device=args.device,
        tta=args.tta,
        return_probability=args.probability,
        batch_size=args.batch_size,
        largest_component=not args.no_largest_component,
        slice_smoothing=not args.no_slice_smoothing,
        allow_modality_mismatch=args.allow_modality_mismatch,
    )
    for _name, source, target in jobs:
        if target.exists() and source.exists() and target.resolve() == source.resolve():
            raise LiverUNetError(f"The output {target} is the input image; choose another --output.")
    failures = 0
    for number, (name, source, target) in enumerate(jobs, start=1):
        bar.set_prefix(f"[{number}/{len(jobs)}] " if len(jobs) > 1 else "")
        try:
            volume = read_image(source)
            warn_reading_notes(name, volume)
            chosen = model if models is None else models.for_image(volume, name)
            result = segment_volume(volume, chosen, config, progress=bar)
            bar.finish()
            write_liver_mask(result.mask, target)
            written = [str(target)]
            if args.probability and result.probability is not None:
                prob_path = _probability_path(target)
                write_image(result.probability, prob_path)
                written.append(str(prob_path))
        except (CancelledError, KeyboardInterrupt):
            raise
        except Exception as error:  # noqa: BLE001 - one bad image must not stop the others
            bar.finish()
            if len(jobs) == 1:
                raise
            failures += 1
            print(f"liverunet: error: {name}: {failure_reason(error)}", file=sys.stderr)
            continue
        for warning in result.warnings:
            warn(f"{name}: {warning}")
        liver_ml = float(result.mask.array.sum()) * result.mask.voxel_volume_ml
        print(
            f"{name}: wrote {', '.join(written)} (liver {liver_ml:.1f} mL, {result.device}, "
            f"{result.seconds:.1f} s)"
        )
    bar.set_prefix("")
    if failures:
        print(f"liverunet: error: {failures} of {len(jobs)} images failed (see above).", file=sys.stderr)
        return EXIT_USER_ERROR
    return EXIT_OK


# --------------------------------------------------------------------------------------------
