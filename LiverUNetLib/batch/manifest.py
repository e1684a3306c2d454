"""Which scans a batch segments and where each mask goes: files, folders, globs or a CSV manifest.

Every case has an id (unique; a folder's file name without its ending by default), an input and an
output path. ``Shard`` picks every N-th case of the cases sorted by id, so the tasks of a Slurm job array
split a cohort the same way on every run without talking to each other. Nothing here reads an image:
a missing or unreadable input fails as its own case, and the batch goes on.
"""

from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import LiverUNetError
from ..image_io import file_ending, strip_ending

#: Endings of the image files a folder input contributes (a folder without any is one DICOM series).
IMAGE_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")
#: Endings an output given as a file name may have.
MASK_FILE_ENDINGS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
#: The manifest's columns: ``input`` is required, the others may be left out or empty.
MANIFEST_COLUMNS = ("input", "output", "case_id")
_GLOB_CHARACTERS = set("*?[")


@dataclass(frozen=True)
class BatchCase:
    """One scan to segment: its id in the report, the image (file or DICOM folder) and the mask to write."""

    case_id: str
    input: Path
    output: Path
    probability_output: Optional[Path] = None

    @property
    def name(self) -> str:
        """What messages call the case: the input's file or folder name."""
        return self.input.name or self.case_id


@dataclass(frozen=True)
class Shard:
    """Task ``index`` of ``count`` (0-based, as ``--shard $SLURM_ARRAY_TASK_ID/N`` with ``--array=0-<N-1>``)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        parts = str(text).split("/")
        try:
            index, count = (int(p) for p in parts)
        except ValueError:
            raise LiverUNetError(f"--shard {text}: expected I/N with whole numbers, e.g. 0/10.") from None
        if count < 1 or not 0 <= index < count:
            raise LiverUNetError(f"--shard {text}: I must be in 0..N-1 and N at least 1 (e.g. 0/10 ... 9/10).")
        return cls(index, count)

    def select(self, cases: Sequence[BatchCase]) -> list[BatchCase]:
        """Every ``count``-th case, from the ``index``-th, of the cases sorted by id: disjoint shards that
        together hold every case, the same on every run and machine."""
        return sorted(cases, key=lambda c: c.case_id)[self.index :: self.count]

    def label(self) -> str:
        return f"shard {self.index}/{self.count}"


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted; hidden files left out."""
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_FILE_ENDINGS)
    )


def without_own_outputs(files: list[Path]) -> list[Path]:
    """A folder's image files less those a segment run wrote there: ``<case>_liver<ending>`` and
    ``<case>_liver_probability<ending>`` next to ``<case>``, so segmenting a folder into itself
    twice does not segment its own masks."""
    stems = {strip_ending(f) for f in files}
    own = {f"{s}_liver{tail}" for s in stems for tail in ("", "_probability")}
    return [f for f in files if strip_ending(f) not in own]


def probability_path(mask_path: Path) -> Path:
    """Where the probability map of ``mask_path`` goes: ``<name>_probability`` beside it (a ``.seg.nrrd``
    mask gets a plain ``.nrrd`` map)."""
    ending = file_ending(mask_path)
    ending = ".nrrd" if ending == ".seg.nrrd" else ending
    return mask_path.with_name(f"{strip_ending(mask_path)}_probability{ending}")


def _expand(text: str) -> list[Path]:
    """A path, or the sorted matches of a glob pattern (quoted so the shell left it alone, which also keeps
    a cohort of thousands of files off the command line)."""
    p = Path(text).expanduser()
    if p.exists() or not (_GLOB_CHARACTERS & set(text)):
        if not p.exists():
            raise LiverUNetError(f"Input not found: {p}. Check the path.")
        return [p]
    matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
    if not matches:
        raise LiverUNetError(f"No file matches {text}. Check the pattern.")
    return matches


def _unique_ids(named: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """Ids made unique by a number (``case``, ``case_2``) where two inputs share a name."""
    seen: dict[str, int] = {}
    result = []
    for name, p in named:
        seen[name] = seen.get(name, 0) + 1
        result.append((name if seen[name] == 1 else f"{name}_{seen[name]}", p))
    return result


def inputs_of(texts: Sequence[str]) -> tuple[list[tuple[str, Path]], bool]:
    """(case name, path) of every scan the arguments name, and whether they name a folder of files or
    several scans (which need an output folder). A folder of image files gives one case per file, less the
    masks a run wrote there; a folder without image files is one DICOM series."""
    named: list[tuple[str, Path]] = []
    several = len(texts) > 1
    for text in texts:
        matches = _expand(text)
        several = several or len(matches) > 1
        for p in matches:
            files = without_own_outputs(image_files(p)) if p.is_dir() else []
            if files:
                several = True
                named.extend((strip_ending(f), f) for f in files)
            elif p.is_dir():
                named.append((p.name or "dicom", p))
            else:
                named.append((strip_ending(p), p))
    return named, several or len(named) > 1


def is_mask_file_name(path: Path) -> bool:
    return file_ending(path) in MASK_FILE_ENDINGS


def cases_from_inputs(texts: Sequence[str], output: Path, fmt: str, probability: bool = False) -> tuple[list[BatchCase], bool]:
    """The cases of image files, folders or glob patterns, and whether this is a batch (a folder run):
    a batch writes ``<output>/<case>_liver<fmt>``; a single scan goes to ``output`` when that names a mask
    file, else into the folder ``output``."""
    named, several = inputs_of(texts)
    if not named:
        raise LiverUNetError("No image to segment: the inputs hold no image file or DICOM series.")
    output = Path(output).expanduser()
    if several:
        if is_mask_file_name(output) or (output.exists() and not output.is_dir()):
            raise LiverUNetError(
                f"{len(named)} images to segment need --output to be a folder, not the file {output.name}."
            )
        return [_case(case_id, p, output / f"{case_id}_liver{fmt}", probability) for case_id, p in _unique_ids(named)], True
    (case_id, p), = named
    from ..mask_files import check_mask_output

    if output.is_dir() or not is_mask_file_name(output):
        if not output.is_dir() and output.suffix:
            check_mask_output(output)  # a file name with another ending: refused with the list of endings
        return [_case(case_id, p, output / f"{case_id}_liver{fmt}", probability)], False
    return [_case(case_id, p, check_mask_output(output), probability)], False


def _case(case_id: str, source: Path, output: Path, probability: bool) -> BatchCase:
    return BatchCase(case_id, source, output, probability_path(output) if probability else None)


def read_manifest(path: Path, output_folder: Path, fmt: str, probability: bool = False) -> list[BatchCase]:
    """The cases of a CSV manifest with a header row naming ``input`` and optionally ``output`` and
    ``case_id``. Relative paths are taken from the manifest's folder; a row without an output writes
    ``<output_folder>/<case_id>_liver<fmt>``; a row without an id takes the input's name."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LiverUNetError(f"Manifest not found: {path}. Give a CSV file with an 'input' column.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise LiverUNetError(f"Cannot read the manifest {path}: {error}. Save it as a UTF-8 CSV file.") from None
    if "input" not in columns:
        raise LiverUNetError(f"The manifest {path.name} has no 'input' column (its header: {', '.join(columns) or 'none'}); "
                             "the first row must name the columns input[,output][,case_id].")
    unknown = sorted(set(columns) - set(MANIFEST_COLUMNS) - {""})
    if unknown:
        raise LiverUNetError(f"The manifest {path.name} has unknown columns: {', '.join(unknown)}; "
                             "use input, output and case_id.")
    base = path.parent
    named: list[tuple[str, Path, Optional[Path], bool]] = []
    lines: dict[str, int] = {}
    for line, raw in rows:
        row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(row.values()):
            continue
        if not row.get("input"):
            raise LiverUNetError(f"{path.name} line {line}: the input is empty.")
        source = _relative_to(base, row["input"])
        given_id = row.get("case_id", "")
        case_id = given_id or (strip_ending(source) if not source.is_dir() else source.name)
        if given_id:
            if given_id in lines:
                raise LiverUNetError(f"{path.name} lines {lines[given_id]} and {line} have the same case_id "
                                     f"{given_id!r}; case ids must be unique.")
            lines[given_id] = line
        target = _relative_to(base, row["output"]) if row.get("output") else None
        if target is not None and not is_mask_file_name(target):
            raise LiverUNetError(f"{path.name} line {line}: the output {target.name} does not end in one of "
                                 f"{', '.join(MASK_FILE_ENDINGS)}.")
        named.append((case_id, source, target, bool(given_id)))
    if not named:
        raise LiverUNetError(f"The manifest {path.name} lists no case.")
    taken = {case_id for case_id, _s, _t, given in named if given}
    cases = []
    for case_id, source, target, given in named:
        if not given:  # a default id never takes an explicit one, nor another default (case, case_2, ...)
            candidate, number = case_id, 1
            while candidate in taken:
                number += 1
                candidate = f"{case_id}_{number}"
            case_id = candidate
            taken.add(case_id)
        cases.append(_case(case_id, source, target or Path(output_folder).expanduser() / f"{case_id}_liver{fmt}",
                           probability))
    check_cases(cases)
    return cases


def _relative_to(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def check_cases(cases: Sequence[BatchCase]) -> None:
    """Refuse two cases writing one file, or a case writing over its own input, before any work."""
    seen: dict[Path, str] = {}
    for case in cases:
        for target in (case.output, case.probability_output):
            if target is None:
                continue
            key = Path(os.path.abspath(target))
            if key in seen:
                raise LiverUNetError(f"Cases {seen[key]!r} and {case.case_id!r} would both write {target}; "
                                     "give each case its own output.")
            seen[key] = case.case_id
            if case.input.exists() and target.exists() and target.resolve() == case.input.resolve():
                raise LiverUNetError(f"The output {target} is the input image of case {case.case_id!r}; "
                                     "choose another output.")
