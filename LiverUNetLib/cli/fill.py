"""``liverunet fill``: *Fill from painted slices* from files, the job Slicer's effect runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import LiverUNetError
from .common import EXIT_OK, warn, warn_reading_notes
from .progress_bar import ProgressBar


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this command's options to the ``liverunet`` subcommands."""
    fl = sub.add_parser("fill", parents=[common], help="fill the liver between a few painted slices",
                        description="Fill the liver between painted slices, as Slicer's Fill from painted slices "
                        "does: the start model is fine-tuned on the painted slices of this image, segments the "
                        "rest, and the painted slices stay exactly as painted. PAINTED_LABEL is a label image "
                        "on the image's grid or a .seg.nrrd; a slice holding any liver voxel counts as painted "
                        "(as in train). The output format follows FILLED's ending (.seg.nrrd, .nii.gz, .nrrd, "
                        ".mha, .nii).")
    fl.add_argument("image", metavar="IMAGE", help="image file or DICOM series folder")
    fl.add_argument("painted", metavar="PAINTED_LABEL", help="the liver painted on a few slices")
    fl.add_argument("-o", "--output", required=True, metavar="FILLED")
    fl.add_argument("-m", "--model", metavar="FILE",
                    help="model to fine-tune (default: the shipped model of the image's modality)")
    fl.add_argument("--modality", choices=["auto", "mri", "ct"], default="auto",
                    help="the image's modality, which picks the shipped start model and the intensity "
                    "normalisation; auto reads it from the image (its DICOM Modality, else its intensities)")
    fl.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    fl.add_argument("--label-value", type=int, metavar="N",
                    help="liver value in a label image (default: the non-zero voxels, when they all hold one value)")
    fl.add_argument("--segment", metavar="NAME", help="liver segment name in a .seg.nrrd (default: Liver)")
    fl.set_defaults(func=run)


def _check_output(text: str, inputs: list[Path]) -> Path:
    """The mask path ``-o`` names, refused before any work when its ending cannot hold a mask, it is one of
    the inputs, or it cannot be written."""
    from ..image_io import check_output_name, check_output_writable
    from ..mask_files import check_mask_output

    output = Path(text).expanduser()
    check_output_name(output)
    check_mask_output(output)
    for what, p in zip(("image", "painted label"), inputs):
        if p.exists() and output.exists() and output.samefile(p):
            raise LiverUNetError(f"--output {output} is the {what}; choose another file name.")
    return check_output_writable(output)


def run(args: argparse.Namespace, bar: ProgressBar) -> int:
    from .. import fill_recipe
    from ..fill import fill_from_painted
    from ..mask_files import write_liver_mask
    from ..shipped_models import SHIPPED_START
    from ..training_files import load_training_case

    image_path, painted_path = Path(args.image).expanduser(), Path(args.painted).expanduser()
    for p in (image_path, painted_path):
        if not p.exists():
            raise LiverUNetError(f"Not found: {p}. Check the path.")
    output = _check_output(args.output, [image_path, painted_path])
    case = load_training_case("painted", image_path, painted_path, args.label_value, args.segment)
    warn_reading_notes(image_path.name, case.image)
    if bar.enabled:
        print(f"{case.label.annotated_count} painted slices of {case.image.array.shape[case.label.slice_axis]}",
              file=sys.stderr)
    result = fill_from_painted(case.image, case.label, args.model if args.model else SHIPPED_START,
                               fill_recipe.FILL_RECIPE, device=args.device, progress=bar,
                               modality=None if args.modality == "auto" else args.modality)
    bar.finish()
    write_liver_mask(result.mask, output)
    for warning in result.warnings:
        warn(f"{image_path.name}: {warning}")
    liver_ml = float(result.mask.array.sum()) * result.mask.voxel_volume_ml
    print(f"{image_path.name}: wrote {output} (liver {liver_ml:.1f} mL; {len(result.painted)} painted slices kept; "
          f"{result.model}; {result.device}, {result.seconds:.1f} s)")
    return EXIT_OK
