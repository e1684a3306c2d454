"""What the ``liverunet`` commands share: exit codes, argument types, finding and matching image files,
and one-line warnings and errors."""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

from ..errors import LiverUNetError

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


class CliParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one ``liverunet: error:`` line (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(
            EXIT_USER_ERROR,
            f"liverunet: error: {message} (see '{self.prog} --help')\n",
        )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def is_image_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(IMAGE_FILE_ENDINGS)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def case_key(path: Path) -> str:
    """Name used to match files across folders: the file name without ending, in lower case,
    with words such as image/label/seg/mask/pred/liver removed (``image_21`` -> ``21``)."""
    from ..image_io import strip_ending

    stem = strip_ending(path).lower()
    words = [w for w in re.split(r"[_\-. ]+", stem) if w]
    kept = [w for w in words if w not in _CASE_WORDS]
    return "_".join(kept) if kept else stem


def match_cases(first: list[Path], second: list[Path], what: tuple[str, str]) -> list[tuple[str, Path, Path]]:
    """Pair files of two folders: same file name first, else the same :func:`case_key`."""
    from ..image_io import strip_ending

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


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def warn(message: str) -> None:
    print(f"liverunet: warning: {one_line(message)}", file=sys.stderr)


# --------------------------------------------------------------------------------------------


def warn_reading_notes(name: str, volume: Any) -> None:
    """Warn about how an input was read (which DICOM series of several was taken)."""
    from ..image_io import reading_notes

    for note in reading_notes(volume):
        warn(f"{name}: {note}")


def failure_reason(error: Exception) -> str:
    """One line saying why one image of a batch failed; unexpected errors are marked as bugs."""
    if isinstance(error, LiverUNetError):
        return one_line(error)
    return (f"unexpected {type(error).__name__}: {one_line(error)} (this is a bug; run this image alone "
            "with --debug for the traceback and report it)")
