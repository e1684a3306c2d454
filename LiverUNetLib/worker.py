"""Background worker for the Slicer module: ``python -m LiverUNetLib.worker JOB.json``.

Slicer must stay responsive while a model trains or segments, and must be able to stop the job,
so the job runs in its own process. The protocol (docs/architecture.md):

* The job file is JSON, ``{"kind": "segment" | "train" | "fill" | "devices", ...}``:

  - segment: ``{"kind": "segment", "input": PATH, "output": PATH, "model": PATH | null,
    "device": "auto", "tta": false, "probability_output": PATH | null}``; a null model is the shipped
    model of the image's modality, and the result's ``"model"`` says which model ran and why
  - train: ``{"kind": "train", "cases": [{"name": str, "image": PATH, "label": PATH,
    "label_value": 1, "empty_label_value": 2 | null}], "output": MODEL_PATH,
    "settings": {TrainConfig fields}, "init": PATH | "shipped" | null}`` ("shipped": the shipped
    model of the cases' modality). Labels are label volumes on the
    image grid (or ``.seg.nrrd``); voxels equal to ``empty_label_value`` mark painted slices
    that hold no liver.
  - fill: ``{"kind": "fill", "image": PATH, "painted": LABEL_PATH, "output": PATH, "start_model": PATH |
    "shipped" | null, "device": "auto", "settings": {TrainConfig fields}, "modality": "ct" | "mri" | null}``:
    *Fill from painted slices* (``fill.fill_from_painted``); a slice of the label holding liver is painted,
    the output is the filled mask with those slices exactly as painted; a null start model trains from random
    weights; ``settings`` override the fill recipe's (``label_value`` and ``segment`` pick the liver as in train)
  - devices: ``{"kind": "devices"}``; the result says what torch here can use: ``torch_version``,
    ``cuda_build`` (null for a CPU-only build), ``cuda_available``, ``cuda_device``, ``mps_available``

* stdout carries only JSON lines: ``{"event": "progress", ...ProgressEvent fields}`` while
  working, then exactly one of ``{"event": "result", "kind": ..., ...}`` (exit code 0),
  ``{"event": "error", "message": ...}`` (exit code 1) or ``{"event": "cancelled"}`` (exit
  code 3). Anything else the libraries print goes to stderr.
* Cancel with SIGTERM or SIGINT, or by creating ``<job>.cancel`` next to the job file (``job.cancel``
  or ``job.json.cancel``). Outputs are written atomically at the very end, so a cancelled or failed
  job leaves no partial file and earlier files untouched.

:func:`run_job` (in ``worker_jobs.py``, importable from here) does the work in-process (tests and
other hosts call it directly).

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
import traceback
from pathlib import Path
from typing import Any, Optional

from .errors import CancelledError, LiverUNetError
from .progress import CancelToken
# the jobs themselves; run_job and cached_model stay importable from here
from .worker_jobs import JOBS, Emit, cached_model, run_devices, run_fill, run_job, run_segment, run_train  # noqa: F401

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3


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
