"""One case of a batch, as every engine runs it: read, segment, write atomically, record, report.

:func:`segment_case` is the unit of work that the in-process loop, the local worker processes and Dask
workers all call, so every engine gives the same masks and the same report rows. Models are loaded once
per process (:func:`process_model`) and kept for the next case; each worker process sets its own torch
threads (:func:`configure_process`), so N workers with T threads each use N x T cores, not N x all.
A failing case becomes a ``failed`` report row; only a cancel or Ctrl-C stops the batch.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ..devices import DeviceChoice
from ..errors import CancelledError, LiverUNetError
from ..image_io import strip_ending
from ..preprocessing import Modality
from ..progress import CancelToken, ProgressCallback, ignore_progress
from .manifest import BatchCase
from .records import write_record
from .report import CaseReport, CaseStatus

_PROCESS_MODELS: dict[str, Any] = {}  # model path -> LiverModel, for the life of the worker process


@dataclass(frozen=True)
class BatchSettings:
    """How every case of a batch is segmented (the same options as a single ``liverunet segment``)."""

    model: Optional[Path] = None  # None: the shipped model of each image's modality
    modality: Optional[Modality] = None  # with model None: the shipped model of this modality for every image
    device: DeviceChoice = DeviceChoice.AUTO
    tta: bool = False
    probability: bool = False
    batch_size: Optional[int] = None
    largest_component: bool = True
    slice_smoothing: bool = True
    allow_modality_mismatch: bool = False
    threads: Optional[int] = None  # torch threads per worker process; None: torch's default

    def inference_config(self) -> Any:
        from ..inference import InferenceConfig

        return InferenceConfig(
            device=self.device, tta=self.tta, return_probability=self.probability, batch_size=self.batch_size,
            largest_component=self.largest_component, slice_smoothing=self.slice_smoothing,
            allow_modality_mismatch=self.allow_modality_mismatch,
        )

    def recipe(self) -> str:
        """A digest of what decides the masks (the model's bytes, the options; not the device, batch size or
        threads): a rerun with other settings is told, not silently given the old masks."""
        if self.model is None:
            model = f"shipped:{self.modality.value if self.modality else 'by image'}"
        else:
            model = _file_digest(Path(self.model))
        parts = asdict(self)
        for key in ("model", "modality", "device", "batch_size", "threads"):
            parts.pop(key)
        text = repr((model, sorted(parts.items())))
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise LiverUNetError(f"Cannot read the model {path}: {error.strerror}. Check the path.") from None
    return digest.hexdigest()


def configure_process(threads: Optional[int], die_with_parent: bool = False) -> None:
    """Worker process set-up: its torch threads, and on Linux an end with the process that started it (a
    killed batch leaves no worker segmenting on, racing the rerun for the same case)."""
    if die_with_parent and sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def process_model(path: Path) -> Any:
    """The model at ``path``, loaded once per process."""
    from ..model_file import load_model

    key = str(Path(path).expanduser().resolve())
    if key not in _PROCESS_MODELS:
        _PROCESS_MODELS[key] = load_model(key)
    return _PROCESS_MODELS[key]


def _choose_model(volume: Any, settings: BatchSettings) -> tuple[Any, str]:
    from ..model_file import choose_shipped_model

    if settings.model is not None:
        return process_model(settings.model), f"the model {settings.model}"
    choice = choose_shipped_model(volume, settings.modality)
    return process_model(choice.path), choice.describe()


def _remove_stale_temporaries(target: Path) -> None:
    """Staged files a killed run left beside ``target`` (``.<name>.tmp-<pid>-<hex><ending>``): this case is
    redone now, by this process alone."""
    pattern = f".{strip_ending(target)}.tmp-*"
    for leftover in target.parent.glob(pattern):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


def _peak_memory_mib() -> Optional[float]:
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def one_line(text: Any) -> str:
    return " ".join(str(text).split())


def failure_reason(error: BaseException) -> str:
    """One line saying why a case failed; unexpected errors are marked as bugs."""
    if isinstance(error, LiverUNetError):
        return one_line(error)
    return (f"unexpected {type(error).__name__}: {one_line(error)} (this is a bug; run this image alone "
            "with --debug for the traceback and report it)")


def segment_case(case: BatchCase, settings: BatchSettings, folder: Path, recipe: str,
                 progress: ProgressCallback = ignore_progress, cancel: Optional[CancelToken] = None) -> CaseReport:
    """Segment ``case``, write its mask (and probability map) atomically, then its record in ``folder``.

    Never raises for a bad case: the report row says what failed. Cancel and Ctrl-C pass through, with no
    partial file left (the writes are staged)."""
    from .. import inference  # looked up per call: tests and callers may replace segment_volume
    from ..image_io import atomic_path, read_image, reading_notes, write_image
    from ..mask_files import write_liver_mask

    started = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    report = CaseReport(case.case_id, str(case.input), str(case.output), CaseStatus.FAILED, worker=worker,
                        probability_output=str(case.probability_output or ""))
    try:
        if not case.input.exists():
            raise LiverUNetError(f"Input not found: {case.input}. Check the path.")
        for target in filter(None, (case.output, case.probability_output)):
            _remove_stale_temporaries(target)
        volume = read_image(case.input)
        notes = list(reading_notes(volume))
        model, model_used = _choose_model(volume, settings)
        result = inference.segment_volume(volume, model, settings.inference_config(), progress=progress, cancel=cancel)
        if cancel is not None:
            cancel.check()
        if case.probability_output is not None and result.probability is not None:
            # both staged and checked, then renamed: the mask (what a rerun looks for) last
            with atomic_path(case.output) as staged_mask:
                write_image(result.probability, case.probability_output)
                write_liver_mask(result.mask, staged_mask)
        else:
            write_liver_mask(result.mask, case.output)
        quality = getattr(result, "quality", None)
        report.status = CaseStatus.DONE
        report.liver_ml = float(result.mask.array.astype(bool).sum()) * result.mask.voxel_volume_ml
        report.model = model_used  # the shipped model chosen and why, or the file given
        report.device = result.device
        report.warnings = notes + list(result.warnings)
        report.quality = dict(quality.to_dict()) if quality is not None else {}
    except (CancelledError, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001 - one bad image must not stop the others
        report.error = failure_reason(error)
    report.seconds = time.perf_counter() - started
    report.peak_memory_mib = _peak_memory_mib()
    if report.status is CaseStatus.DONE:
        try:
            write_record(folder, case, report, recipe)
        except OSError as error:  # the mask is written; only the rerun's shortcut is lost (it reads the mask back)
            report.warnings.append(f"could not write the batch record ({error.strerror or error}); a rerun reads "
                                   "the mask back to see that it is complete")
    return report
