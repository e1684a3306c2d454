"""Background worker for the Slicer module: ``python -m LiverUNetLib.worker JOB.json``.

Slicer must stay responsive while a model trains or segments, and must be able to stop the job,
so the job runs in its own process. The protocol (docs/architecture.md):

* The job file is JSON, ``{"kind": "segment" | "train" | "devices", ...}``:

  - segment: ``{"kind": "segment", "input": PATH, "output": PATH, "model": PATH | null,
    "device": "auto", "tta": false, "probability_output": PATH | null}``; a null model is the shipped
    model of the image's modality, and the result's ``"model"`` says which model ran and why
  - train: ``{"kind": "train", "cases": [{"name": str, "image": PATH, "label": PATH,
    "label_value": 1, "empty_label_value": 2 | null}], "output": MODEL_PATH,
    "settings": {TrainConfig fields}, "init": PATH | "shipped" | null}`` ("shipped": the shipped
    model of the cases' modality). Labels are label volumes on the
    image grid (or ``.seg.nrrd``); voxels equal to ``empty_label_value`` mark painted slices
    that hold no liver.
  - devices: ``{"kind": "devices"}``; the result says what torch here can use: ``torch_version``,
    ``cuda_build`` (null for a CPU-only build), ``cuda_available``, ``cuda_device``, ``mps_available``

* stdout carries only JSON lines: ``{"event": "progress", ...ProgressEvent fields}`` while
  working, then exactly one of ``{"event": "result", "kind": ..., ...}`` (exit code 0),
  ``{"event": "error", "message": ...}`` (exit code 1) or ``{"event": "cancelled"}`` (exit
  code 3). Anything else the libraries print goes to stderr.
* Cancel with SIGTERM or SIGINT, or by creating ``<job>.cancel`` next to the job file (``job.cancel``
  or ``job.json.cancel``). Outputs are written atomically at the very end, so a cancelled or failed
  job leaves no partial file and earlier files untouched.

:func:`run_job` does the work in-process (tests and other hosts call it directly).

Warm mode, ``python -m LiverUNetLib.worker --serve``: one long-lived process reads job file paths
from stdin, one per line, and answers each exactly as above (progress lines, then one result,
error or cancelled line); it exits at the end of stdin. torch is imported and the model loaded
once, so later jobs skip the start-up (about 2-3 s on a 2-core CPU, docs/benchmarks.md). A job is
cancelled with its cancel file; SIGTERM/SIGINT cancel the running job and end the process.
Loaded models are cached in the process (keyed by path, size and modification time) in both modes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import CancelledError, LiverUNetError
from .progress import CancelToken, ProgressEvent, Stage
from .shipped_models import SHIPPED_START

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3

_MODEL_CACHE: dict = {}

Emit = Callable[[dict], None]


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars to numbers, paths to strings, inf/NaN to null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "value"):  # enums
        return _jsonable(value.value)
    return str(value)


def _require(job: dict, key: str) -> Any:
    if key not in job or job[key] in (None, ""):
        raise LiverUNetError(f"The job has no '{key}'.")
    return job[key]


def _progress_callback(emit: Emit, cancel: CancelToken) -> Callable[[ProgressEvent], None]:
    def progress(event: ProgressEvent) -> None:
        emit({"event": "progress", **event.to_dict()})
        cancel.check()

    return progress


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------
def cached_model(path):
    """``load_model(path)``, reused while the file is unchanged (a warm worker loads it once)."""
    from .model_file import load_model

    resolved = Path(os.fspath(path)).expanduser().resolve()
    try:
        stat = resolved.stat()
        key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    except OSError:
        return load_model(resolved)  # raises the usual "not found" LiverUNetError
    model = _MODEL_CACHE.get(key)
    if model is None:
        model = load_model(resolved)
        _MODEL_CACHE.clear()  # keep one model: a new model replaces the old one
        _MODEL_CACHE[key] = model
    return model


def run_segment(job: dict, emit: Emit, cancel: CancelToken) -> dict:
    from .image_io import atomic_path, read_image, write_image
    from .inference import InferenceConfig, segment_volume
    from .model_file import choose_shipped_model
    from .segmentation_file import check_mask_output, write_liver_mask

    started = time.perf_counter()
    source = Path(os.fspath(_require(job, "input"))).expanduser()
    output = check_mask_output(_require(job, "output"))
    probability_output = job.get("probability_output")
    if probability_output:
        probability_output = check_mask_output(probability_output, probability=True)
    progress = _progress_callback(emit, cancel)

    progress(ProgressEvent(Stage.LOADING, 0.0, f"Reading {source.name}"))
    volume = read_image(source)
    if job.get("model"):
        model_path, model_used = job["model"], f"the model {job['model']}"
    else:  # the shipped model of the image's modality
        choice = choose_shipped_model(volume)
        model_path, model_used = choice.path, choice.describe()
        progress(ProgressEvent(Stage.LOADING, 0.0, f"Using {model_used}"))
    model = cached_model(model_path)
    cancel.check()
    config = InferenceConfig(
        device=job.get("device") or "auto",
        tta=bool(job.get("tta", False)),
        return_probability=bool(probability_output),
        batch_size=job.get("batch_size"),
        allow_modality_mismatch=bool(job.get("allow_modality_mismatch", False)),
    )
    result = segment_volume(volume, model, config, progress=progress, cancel=cancel)
    cancel.check()
    progress(ProgressEvent(Stage.WRITING, 0.0, f"Writing {output.name}"))
    # Both files are staged next to their destinations and renamed only when both are complete.
    with atomic_path(output) as staged_mask:
        if probability_output and result.probability is not None:
            with atomic_path(probability_output) as staged_probability:
                write_image(result.probability, staged_probability)
                write_liver_mask(result.mask, staged_mask)
                cancel.check()
        else:
            write_liver_mask(result.mask, staged_mask)
            cancel.check()
    progress(ProgressEvent(Stage.DONE, 1.0, "Done"))
    return {
        "event": "result",
        "kind": "segment",
        "output": str(output),
        "probability_output": str(probability_output) if probability_output else None,
        "device": result.device,
        "seconds": time.perf_counter() - started,
        "inference_seconds": result.seconds,
        "liver_ml": float(result.mask.array.sum()) * result.mask.voxel_volume_ml,
        "warnings": list(result.warnings),
        "model": model_used,
    }


def _whole_number(spec: dict, key: str, default: Optional[int]) -> Optional[int]:
    """``spec[key]`` as an int (``default`` when absent), or a one-line error naming the key."""
    value = spec.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise LiverUNetError(f"'{key}' must be a whole number; got {value!r}.")
    return int(value)


def _load_case(spec: dict, index: int):
    from .training_files import load_training_case

    if not isinstance(spec, dict):
        raise LiverUNetError(f"Training case {index + 1} is not an object.")
    name = str(spec.get("name") or f"case_{index + 1}")
    image = Path(os.fspath(_require(spec, "image"))).expanduser()
    label = Path(os.fspath(_require(spec, "label"))).expanduser()
    for p in (image, label):
        if not p.exists():
            raise LiverUNetError(f"Case '{name}': {p} not found.")
    try:
        return load_training_case(
            name,
            image,
            label,
            label_value=_whole_number(spec, "label_value", None),
            segment_name=spec.get("segment"),
            empty_label_value=_whole_number(spec, "empty_label_value", None),
            every_k=_whole_number(spec, "every_k", 1),
            dense=bool(spec.get("dense", False)),
        )
    except LiverUNetError as error:
        raise LiverUNetError(f"Case '{name}': {error}") from None


def run_train(job: dict, emit: Emit, cancel: CancelToken) -> dict:
    from .training import TrainConfig, train
    from .training_files import check_setting_types

    started = time.perf_counter()
    specs = _require(job, "cases")
    if not isinstance(specs, list) or not specs:
        raise LiverUNetError("The training job lists no case.")
    output = Path(os.fspath(_require(job, "output"))).expanduser()
    settings = job.get("settings") or {}
    if not isinstance(settings, dict):
        raise LiverUNetError("The job's 'settings' must be an object of training settings.")
    check_setting_types(settings)
    config = TrainConfig.from_dict(settings)
    progress = _progress_callback(emit, cancel)
    cases = []
    for index, spec in enumerate(specs):
        progress(ProgressEvent(Stage.LOADING, index / len(specs), f"Loading case {index + 1}/{len(specs)}"))
        cases.append(_load_case(spec, index))
    init = job.get("init") or None
    if init == SHIPPED_START:  # the shipped model of the cases' modality (Fill, and Train's "start from")
        from .model_file import shipped_start_model

        init = shipped_start_model([case.image for case in cases])
    result = train(
        cases,
        config,
        output,
        init_model=init,
        progress=progress,
        cancel=cancel,
        resume=bool(job.get("resume", True)),
    )
    progress(ProgressEvent(Stage.DONE, 1.0, "Done"))
    return {
        "event": "result",
        "kind": "train",
        "model": str(result.model_path),
        "validation_dice": result.validation_dice,
        "epochs": list(result.epochs_run),
        "fold_dice": list(getattr(result, "fold_dice", []) or []),
        "seconds": time.perf_counter() - started,
        "device": getattr(result, "device", None),
        "annotated_slices": {c.name: c.label.annotated_count for c in cases},
    }


def run_devices(job: dict, emit: Emit, cancel: CancelToken) -> dict:
    """What torch in this process can use, so the Slicer panel never imports torch itself (importing it
    there would block the GUI for seconds, initialise CUDA in Slicer and, on Windows, lock torch's files)."""
    import torch

    cuda = bool(torch.cuda.is_available())
    mps = getattr(torch.backends, "mps", None)
    return {
        "event": "result",
        "kind": "devices",
        "torch_version": str(torch.__version__),
        "cuda_build": torch.version.cuda,  # None for a CPU-only build
        "cuda_available": cuda,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "mps_available": bool(mps is not None and mps.is_available()),
    }


JOBS = {"segment": run_segment, "train": run_train, "devices": run_devices}


def run_job(job: dict, emit: Emit, cancel: CancelToken) -> dict:
    """Run one job description; progress goes through ``emit``; returns the result line (a dict
    with ``event: result``). Raises :class:`LiverUNetError` (or :class:`CancelledError`)."""
    if not isinstance(job, dict):
        raise LiverUNetError("A job must be a JSON object.")
    kind = job.get("kind")
    if kind not in JOBS:
        raise LiverUNetError(f"Unknown job kind {kind!r}; use one of {', '.join(JOBS)}.")
    cancel.check()
    return JOBS[kind](job, emit, cancel)


# --------------------------------------------------------------------------------------------
# Process entry point
# --------------------------------------------------------------------------------------------
def cancel_files(job_path: Path) -> list[Path]:
    """Files whose appearance cancels the job: ``job.cancel`` and ``job.json.cancel``."""
    return [job_path.with_suffix(".cancel"), job_path.with_name(job_path.name + ".cancel")]


class _CancelWatcher(threading.Thread):
    """Polls for the cancel file so a job is stopped even between progress events."""

    def __init__(self, files: list[Path], cancel: CancelToken, interval: float = 0.25) -> None:
        super().__init__(daemon=True, name="liverunet-cancel-watcher")
        self.files, self.cancel, self.interval = files, cancel, interval
        self._stop = threading.Event()

    def poll(self) -> None:
        if any(f.exists() for f in self.files):
            self.cancel.cancel()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stop.set()


def _json_stdout():
    """A private handle on the real stdout for JSON lines; fd 1 then points at stderr, so stray
    prints from libraries (C or Python) can never corrupt the protocol."""
    sys.stdout.flush()
    try:
        fd = os.dup(1)
        os.dup2(2, 1)
        stream = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
    except OSError:  # no real file descriptors (embedded hosts): use what we have
        return sys.stdout
    sys.stdout = sys.stderr
    return stream


def _run_job_file(job_path: Path, emit: Emit, cancel: CancelToken) -> int:
    """Read, run and answer one job file (the protocol above); returns the exit code."""
    try:
        job = json.loads(job_path.read_text(encoding="utf-8"))
    except OSError as error:
        emit({"event": "error", "message": f"Cannot read the job file {job_path}: {error.strerror}."})
        return EXIT_ERROR
    except json.JSONDecodeError as error:
        emit({"event": "error", "message": f"The job file {job_path} is not valid JSON: {error}."})
        return EXIT_ERROR

    watcher = _CancelWatcher(cancel_files(job_path), cancel)
    watcher.poll()
    watcher.start()

    def emit_and_poll(message: dict) -> None:
        watcher.poll()
        emit(message)

    try:
        result = run_job(job, emit_and_poll, cancel)
        if cancel.cancelled:  # cancelled after the last check: the outputs exist, report honestly
            result.setdefault("warnings", []).append("Cancel arrived after the results were written.")
        emit(result)
        return EXIT_OK
    except (CancelledError, KeyboardInterrupt):
        emit({"event": "cancelled"})
        return EXIT_CANCELLED
    except LiverUNetError as error:
        if cancel.cancelled:
            emit({"event": "cancelled"})
            return EXIT_CANCELLED
        emit({"event": "error", "message": " ".join(str(error).split())})
        return EXIT_ERROR
    except MemoryError:
        emit({"event": "error", "message": "Out of memory. Close other programs or use a smaller batch size."})
        return EXIT_ERROR
    except Exception as error:  # noqa: BLE001 - report, never die silently
        traceback.print_exc(file=sys.stderr)
        emit(
            {
                "event": "error",
                "message": f"Unexpected {type(error).__name__}: {' '.join(str(error).split())} "
                "(this is a bug; the traceback is on stderr).",
            }
        )
        return EXIT_ERROR
    finally:
        watcher.stop()


def _return_gpu_memory() -> None:
    """A warm server waits between jobs: give the GPU memory PyTorch cached back to other programs."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def main(argv: Optional[list[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out = _json_stdout()
    lock = threading.Lock()

    def emit(message: dict) -> None:
        line = json.dumps(_jsonable(message), allow_nan=False)
        with lock:
            out.write(line + "\n")
            out.flush()

    if len(args) != 1 or args[0] in ("-h", "--help"):
        emit({"event": "error", "message": "Usage: python -m LiverUNetLib.worker JOB.json (or --serve)"})
        return EXIT_USAGE
    serve = args[0] == "--serve"

    cancel = CancelToken()
    signals_seen = []
    stopping = threading.Event()
    busy = threading.Event()  # warm mode: a job is running (else the server waits on stdin)

    def on_signal(signum, _frame) -> None:
        signals_seen.append(signum)
        stopping.set()
        cancel.cancel()
        if len(signals_seen) > 1 or (serve and not busy.is_set()):
            raise KeyboardInterrupt  # a second signal, or an idle server: stop now (cleanup still runs)

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, on_signal)
        except (ValueError, OSError):  # not the main thread
            pass

    if not serve:
        return _run_job_file(Path(args[0]).expanduser(), emit, cancel)

    # warm mode: one job file path per stdin line, until end of input or a signal
    code = EXIT_OK
    try:
        for line in sys.stdin:
            if stopping.is_set():
                break
            if not line.strip():
                continue
            cancel = CancelToken()
            busy.set()
            try:
                code = _run_job_file(Path(line.strip()).expanduser(), emit, cancel)
            finally:
                busy.clear()
                _return_gpu_memory()
            if stopping.is_set():
                break
    except KeyboardInterrupt:  # a signal while waiting for the next job
        pass
    return code


if __name__ == "__main__":
    sys.exit(main())
