"""The ``liverunet`` command: segment, train, evaluate, info.

Every failure ends in one line on stderr, ``liverunet: error: <what is wrong and what to do>``,
and a non-zero exit code: 2 for problems the user can fix (bad input, missing model, usage),
130 after Ctrl-C, 1 for unexpected errors (run again with ``--debug`` for the traceback).
Progress goes to stderr as a simple text bar; results go to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TextIO

from .errors import CancelledError, LiverUNetError
from .progress import ProgressEvent


EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

IMAGE_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")
# Words dropped from file names when matching cases across folders (image_21 <-> label_21).
_CASE_WORDS = {
    "image", "images", "img", "volume", "scan", "label", "labels", "labelmap", "seg",
    "segmentation", "mask", "pred", "prediction", "liver", "gt", "ref", "reference", "truth",
}


# --------------------------------------------------------------------------------------------
# Progress bar (plain text, no dependency)
# --------------------------------------------------------------------------------------------
class ProgressBar:
    """Draws :class:`ProgressEvent` s on a stream: one redrawn line on a terminal, and on a pipe
    or log file one line per stage, epoch or tenth of the work."""

    def __init__(self, stream: Optional[TextIO] = None, enabled: bool = True, width: int = 28) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.prefix = ""
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._drawn = False
        self._last_key: Any = None

    def set_prefix(self, prefix: str) -> None:
        self.finish()
        self.prefix = prefix
        self._last_key = None

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        fraction = event.fraction
        parts = [f"{self.prefix}{event.stage.value:<14}"]
        if fraction is not None:
            fraction = min(max(float(fraction), 0.0), 1.0)
            filled = int(round(fraction * self.width))
            parts.append(f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:3.0f}%")
        if event.folds and event.folds > 1 and event.fold is not None:
            parts.append(f"network {event.fold}/{event.folds}")
        if event.epoch is not None:
            parts.append(f"epoch {event.epoch}/{event.epochs}" if event.epochs else f"epoch {event.epoch}")
        if event.loss is not None:
            parts.append(f"loss {event.loss:.4f}")
        if event.validation_dice is not None:
            parts.append(f"val Dice {event.validation_dice:.3f}")
        if event.eta_seconds is not None and math.isfinite(event.eta_seconds):
            parts.append(f"ETA {_duration(event.eta_seconds)}")
        if event.message and event.epoch is None:
            parts.append(event.message)
        line = "  ".join(parts)
        if self._tty:
            columns = _terminal_columns()
            self.stream.write("\r" + line[: columns - 1].ljust(min(columns - 1, len(line) + 8)))
            self.stream.flush()
            self._drawn = True
            return
        decile = None if fraction is None else int(fraction * 10)
        key = (event.stage, event.fold, event.epoch, decile if event.epoch is None else None)
        if key != self._last_key:
            self._last_key = key
            self.stream.write(line + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _terminal_columns() -> int:
    try:
        return max(40, os.get_terminal_size(2).columns)
    except OSError:
        return 100


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# --------------------------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one ``liverunet: error:`` line (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(
            EXIT_USER_ERROR,
            f"liverunet: error: {message} (see '{self.prog} --help')\n",
        )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of unexpected errors")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bar")

    parser = _Parser(
        prog="liverunet",
        description="Liver segmentation with a 2D U-Net you can train on a few painted slices.",
        parents=[common],
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"liverunet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

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
    seg.add_argument("--batch-size", type=_positive_int, metavar="N", help="slices per batch")
    seg.add_argument("--format", default=".nii.gz", choices=[".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".nii"],
                     help="file format when OUT is a folder (default .nii.gz)")
    seg.add_argument("--no-largest-component", action="store_true",
                     help="keep every connected piece, not only the largest")
    seg.add_argument("--no-slice-smoothing", action="store_true",
                     help="threshold each slice's own probability, without averaging it with its neighbours")
    seg.add_argument("--allow-modality-mismatch", action="store_true",
                     help="run even when the image does not look like the model's modality")
    seg.set_defaults(func=cmd_segment)

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
    tr.add_argument("--every-k", type=_positive_int, default=1, metavar="K",
                    help="keep the label only on every K-th liver slice (simulates sparse painting)")
    tr.add_argument("--dense", action="store_true",
                    help="labels are complete: every slice counts as annotated, empty ones too")
    tr.add_argument("--unpainted-slices-unknown", action="store_true",
                    help="learn nothing from unpainted slices, not even those farther beyond the painted "
                    "ones than the painting interval (by default those count as liver-free); use it when "
                    "the painting does not reach the liver's top and bottom")
    tr.add_argument("--epochs", type=_positive_int, metavar="N")
    tr.add_argument("--folds", type=_positive_int, metavar="K", help="k-fold ensemble (default 1)")
    tr.add_argument("--networks", type=_positive_int, metavar="N",
                    help="networks per fold, from different random starts, averaged (default 1; N times "
                    "longer; 2 gained +0.007 Dice with every 5th slice painted)")
    tr.add_argument("--init", metavar="MODEL", help="fine-tune from this model file")
    tr.add_argument("--modality", choices=["auto", "mri", "ct"], default="auto",
                    help="the images the model is for, which sets its intensity normalisation; auto reads it "
                    "from the training images, also when fine-tuning (an MRI model tuned on CT becomes a CT model)")
    tr.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    tr.add_argument("--batch-size", type=_positive_int, metavar="N")
    tr.add_argument("--base-channels", type=_positive_int, metavar="N")
    tr.add_argument("--depth", type=_positive_int, metavar="N")
    tr.add_argument("--context-slices", type=int, metavar="N", help="2.5D: neighbours on each side")
    tr.add_argument("--spacing", type=_positive_float, metavar="MM", help="in-plane spacing the network works at")
    tr.add_argument("--samples-per-epoch", type=_positive_int, metavar="N")
    tr.add_argument("--patience", type=_positive_int, metavar="N",
                    help="early-stopping patience (epochs), counted only in the last 45 %% of the epochs and "
                    "only with a validation hold-out (five cases or more; default 15)")
    tr.add_argument("--learning-rate", type=_positive_float, metavar="LR")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--settings", metavar="JSON",
                    help="more training settings as a JSON object or a .json file (TrainConfig "
                    "fields, e.g. '{\"crop_size\": 128}'); the options above win")
    tr.add_argument("--no-resume", action="store_true", help="ignore an earlier interrupted run")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", parents=[common], help="compare segmentations with references",
                        description="Dice, IoU, HD95, ASSD, RAVD, MSSD (mm on the real grid) and "
                        "volume. Files, or folders of files matched by name (one row per case plus "
                        "the mean).")
    ev.add_argument("--reference", required=True, metavar="REF")
    ev.add_argument("--prediction", required=True, metavar="PRED")
    ev.add_argument("--label-value", type=int, metavar="N",
                    help="label to compare in both (default: the non-zero voxels when they all hold one value / the "
                    "Liver segment)")
    ev.add_argument("--prediction-label-value", type=int, metavar="N",
                    help="label in the predictions when it differs from --label-value")
    ev.add_argument("--json", action="store_true", help="print JSON (infinite distances as null)")
    ev.set_defaults(func=cmd_evaluate)

    info = sub.add_parser("info", parents=[common], help="show a model card")
    info.add_argument("model", metavar="MODEL")
    info.set_defaults(func=cmd_info)
    return parser


# --------------------------------------------------------------------------------------------
# Helpers shared by the commands
# --------------------------------------------------------------------------------------------
def _is_image_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(IMAGE_FILE_ENDINGS)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image_file(p))


def case_key(path: Path) -> str:
    """Name used to match files across folders: the file name without ending, in lower case,
    with words such as image/label/seg/mask/pred/liver removed (``image_21`` -> ``21``)."""
    from .image_io import strip_ending

    stem = strip_ending(path).lower()
    words = [w for w in re.split(r"[_\-. ]+", stem) if w]
    kept = [w for w in words if w not in _CASE_WORDS]
    return "_".join(kept) if kept else stem


def match_cases(first: list[Path], second: list[Path], what: tuple[str, str]) -> list[tuple[str, Path, Path]]:
    """Pair files of two folders: same file name first, else the same :func:`case_key`."""
    from .image_io import strip_ending

    pairs: list[tuple[str, Path, Path]] = []
    by_name = {strip_ending(p): p for p in second}
    by_key: dict[str, list[Path]] = {}
    for p in second:
        by_key.setdefault(case_key(p), []).append(p)
    used: set[Path] = set()
    unmatched = []
    for p in first:
        partner = by_name.get(strip_ending(p))
        if partner is None:
            candidates = [c for c in by_key.get(case_key(p), []) if c not in used]
            if len(candidates) > 1:  # tie-break: one name extends the other (image_3 -> image_3_liver)
                stem = strip_ending(p).lower()
                candidates = [
                    c for c in candidates
                    if strip_ending(c).lower().startswith(stem) or stem.startswith(strip_ending(c).lower())
                ]
            partner = candidates[0] if len(candidates) == 1 else None
        if partner is None or partner in used:
            unmatched.append(p.name)
            continue
        used.add(partner)
        pairs.append((strip_ending(p), p, partner))
    if unmatched:
        raise LiverUNetError(
            f"No matching {what[1]} file for {what[0]} {', '.join(unmatched[:5])}"
            f"{', ...' if len(unmatched) > 5 else ''}. Name files alike (for example image_07.nii.gz "
            "and label_07.nii.gz) or list the files in matching order."
        )
    return pairs


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _warn(message: str) -> None:
    print(f"liverunet: warning: {_one_line(message)}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# segment
# --------------------------------------------------------------------------------------------
def _segment_jobs(inputs: list[str], output: str, fmt: str) -> list[tuple[str, Path, Path]]:
    """(display name, input, output file) for each case; every output is checked writable here,
    before any image is segmented."""
    from .image_io import check_output_name, check_output_writable

    check_output_name(output)  # before anything stats it (a stat fails on a name too long)
    jobs = _segment_job_list(inputs, output, fmt)
    for _name, _source, target in jobs:
        check_output_writable(target)
    return jobs


def _without_own_outputs(files: list[Path]) -> list[Path]:
    """A folder's image files less those a segment run wrote there: ``<case>_liver<ending>`` and
    ``<case>_liver_probability<ending>`` next to ``<case>``, so segmenting a folder into itself
    twice does not segment its own masks."""
    from .image_io import strip_ending

    stems = {strip_ending(f) for f in files}
    own = {f"{s}_liver{tail}" for s in stems for tail in ("", "_probability")}
    return [f for f in files if strip_ending(f) not in own]


def _segment_job_list(inputs: list[str], output: str, fmt: str) -> list[tuple[str, Path, Path]]:
    from .image_io import file_ending, strip_ending
    from .segmentation_file import check_mask_output

    cases: list[tuple[str, Path]] = []
    needs_folder = len(inputs) > 1
    for text in inputs:
        p = Path(text).expanduser()
        if not p.exists():
            raise LiverUNetError(f"Input not found: {p}. Check the path.")
        if p.is_dir():
            files = _without_own_outputs(_image_files(p))
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


def _warn_reading_notes(name: str, volume: Any) -> None:
    """Warn about how an input was read (which DICOM series of several was taken)."""
    from .image_io import reading_notes

    for note in reading_notes(volume):
        _warn(f"{name}: {note}")


def _failure_reason(error: Exception) -> str:
    """One line saying why one image of a batch failed; unexpected errors are marked as bugs."""
    if isinstance(error, LiverUNetError):
        return _one_line(error)
    return (f"unexpected {type(error).__name__}: {_one_line(error)} (this is a bug; run this image alone "
            "with --debug for the traceback and report it)")


def _probability_path(mask_path: Path) -> Path:
    from .image_io import file_ending, strip_ending

    ending = file_ending(mask_path)
    ending = ".nrrd" if ending == ".seg.nrrd" else ending
    return mask_path.with_name(f"{strip_ending(mask_path)}_probability{ending}")


class ShippedModels:
    """The shipped models, loaded on first use; says which one each image gets and why."""

    def __init__(self, modality: Optional[str] = None) -> None:
        self.modality = modality  # None: each image's own
        self.loaded: dict[Path, object] = {}

    def for_image(self, volume, name: str):
        from .model_file import choose_shipped_model, load_model

        choice = choose_shipped_model(volume, self.modality)
        if choice.path not in self.loaded:
            self.loaded[choice.path] = load_model(choice.path)
        print(f"{name}: using {choice.describe()}", file=sys.stderr)
        return self.loaded[choice.path]


def cmd_segment(args: argparse.Namespace, bar: ProgressBar) -> int:
    from .image_io import read_image, write_image
    from .inference import InferenceConfig, segment_volume
    from .model_file import load_model
    from .segmentation_file import write_liver_mask

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
            _warn_reading_notes(name, volume)
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
            print(f"liverunet: error: {name}: {_failure_reason(error)}", file=sys.stderr)
            continue
        for warning in result.warnings:
            _warn(f"{name}: {warning}")
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
# train
# --------------------------------------------------------------------------------------------
def _pair_training_files(images: list[str], labels: list[str]) -> list[tuple[str, Path, Path]]:
    from .image_io import strip_ending

    image_paths = [Path(p).expanduser() for p in images]
    label_paths = [Path(p).expanduser() for p in labels]
    for p in image_paths + label_paths:
        if not p.exists():
            raise LiverUNetError(f"Not found: {p}. Check the path.")
    if len(image_paths) == 1 and len(label_paths) == 1 and image_paths[0].is_dir() and label_paths[0].is_dir():
        image_files = _image_files(image_paths[0])
        if image_files:  # folders of files: match by name
            label_files = _image_files(label_paths[0])
            if not label_files:
                raise LiverUNetError(f"No label files in {label_paths[0]}.")
            return match_cases(image_files, label_files, ("image", "label"))
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
    from .image_io import check_output_name, check_output_writable

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
    from .training import TrainConfig
    from .training_files import check_setting_types

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
    from .networks.unet import training_memory_bytes

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


def cmd_train(args: argparse.Namespace, bar: ProgressBar) -> int:
    from .training_files import load_training_case

    from .training import TrainConfig, train

    pairs = _pair_training_files(args.images, args.labels)
    output = _check_train_output(args.output, pairs, args.init)
    settings = _train_settings(args)
    cases = []
    for number, (name, image_path, label_path) in enumerate(pairs, start=1):
        if bar.enabled:
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
        _warn_reading_notes(name, cases[-1].image)
    if args.unpainted_slices_unknown:
        settings["liver_free_beyond_painting"] = False
    if args.modality != "auto":
        settings["modality"] = args.modality
    elif not settings.get("modality"):
        from .preprocessing import modality_of_images

        settings["modality"] = modality_of_images([c.image for c in cases]).value
    if settings.get("folds", 1) > len(cases):
        raise LiverUNetError(f"--folds {settings['folds']} needs at least as many cases; got {len(cases)}.")
    config = TrainConfig.from_dict(settings)
    annotated = sum(c.label.annotated_count for c in cases)
    print(
        f"training on {len(cases)} case(s), {annotated} annotated slices, modality "
        f"{settings['modality'].upper()}", file=sys.stderr,
    )
    result = train(cases, config, output, init_model=args.init, progress=bar, resume=not args.no_resume)
    bar.finish()
    dice = "n/a" if result.validation_dice is None else f"{result.validation_dice:.3f}"
    print(f"wrote {result.model_path} (validation Dice {dice}, epochs {result.epochs_run})")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------
def _json_number(value: float) -> Optional[float]:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def cmd_evaluate(args: argparse.Namespace, bar: ProgressBar) -> int:
    from .metrics import METRIC_KEYS, evaluate, mean_metrics
    from .segmentation_file import read_label_volume

    ref = Path(args.reference).expanduser()
    pred = Path(args.prediction).expanduser()
    for p in (ref, pred):
        if not p.exists():
            raise LiverUNetError(f"Not found: {p}. Check the path.")
    pred_value = args.prediction_label_value if args.prediction_label_value is not None else args.label_value
    if ref.is_dir() != pred.is_dir():
        raise LiverUNetError("Give two files or two folders to --reference and --prediction.")
    if ref.is_dir():
        pairs = match_cases(_image_files(ref), _image_files(pred), ("reference", "prediction"))
        if not pairs:
            raise LiverUNetError(f"No image files in {ref}.")
    else:
        pairs = [(pred.name, ref, pred)]
    keys = list(METRIC_KEYS) + ["reference_volume_ml"]
    rows = []
    for number, (name, ref_path, pred_path) in enumerate(pairs, start=1):
        if len(pairs) > 1 and bar.enabled:
            print(f"evaluating {number}/{len(pairs)}: {name}", file=sys.stderr)
        reference = read_label_volume(ref_path, args.label_value)
        prediction = read_label_volume(pred_path, pred_value, reference=reference)
        rows.append((name, evaluate(reference, prediction)))

    if args.json:
        if not ref.is_dir():
            data: dict[str, Any] = {k: _json_number(v) for k, v in rows[0][1].to_dict().items()}
        else:
            data = {
                "cases": [{"case": n, **{k: _json_number(v) for k, v in m.to_dict().items()}} for n, m in rows],
                "mean": {k: _json_number(v) for k, v in mean_metrics([m for _, m in rows]).items()},
            }
        print(json.dumps(data, indent=2, allow_nan=False))
        return EXIT_OK

    headers = ["case"] + keys
    table = [[n] + [_fmt_metric(m.to_dict()[k]) for k in keys] for n, m in rows]
    if len(rows) > 1:
        mean = mean_metrics([m for _, m in rows])
        table.append(["mean"] + [_fmt_metric(mean[k]) for k in keys])
    widths = [max(len(str(r[i])) for r in [headers] + table) for i in range(len(headers))]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    return EXIT_OK


def _fmt_metric(value: float) -> str:
    if not math.isfinite(value):
        return "inf"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


# --------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace, bar: ProgressBar) -> int:
    from .model_file import load_model

    model = load_model(args.model)
    print(model.describe())
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exit_:  # --help, --version, usage errors
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USER_ERROR
    debug = getattr(args, "debug", False)
    bar = ProgressBar(sys.stderr, enabled=not getattr(args, "quiet", False))
    func: Callable[[argparse.Namespace, ProgressBar], int] = args.func
    try:
        return func(args, bar)
    except CancelledError as error:
        bar.finish()
        print(f"liverunet: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except LiverUNetError as error:
        bar.finish()
        print(f"liverunet: error: {_one_line(error)}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        bar.finish()
        print("liverunet: error: interrupted (Ctrl-C); no partial output was kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        bar.finish()
        print("liverunet: error: out of memory. Close other programs, use --batch-size 1, or crop "
              "the image to the abdomen.", file=sys.stderr)
        return EXIT_UNEXPECTED
    except Exception as error:  # noqa: BLE001 - the last line of defence
        bar.finish()
        if debug:
            traceback.print_exc()
        print(
            f"liverunet: error: unexpected {type(error).__name__}: {_one_line(error)} "
            "(this is a bug; run again with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
