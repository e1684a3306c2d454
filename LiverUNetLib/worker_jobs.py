"""What each worker job does: ``segment``, ``train``, ``fill`` and ``devices``, run in-process by :func:`run_job`.

The job descriptions and the JSON-lines protocol around them are in :mod:`.worker`, the process entry point
(``python -m LiverUNetLib.worker``). Models are cached while their file is unchanged, so a warm worker loads
each once (:func:`cached_model`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import LiverUNetError
from .progress import CancelToken, ProgressEvent, Stage
from .shipped_models import SHIPPED_START

_MODEL_CACHE: dict = {}

Emit = Callable[[dict], None]


def _require(job: dict, key: str) -> Any:
    if key not in job or job[key] in (None, ""):
        raise LiverUNetError(f"The job has no '{key}'.")
    return job[key]


def _progress_callback(emit: Emit, cancel: CancelToken) -> Callable[[ProgressEvent], None]:
    def progress(event: ProgressEvent) -> None:
        emit({"event": "progress", **event.to_dict()})
        cancel.check()

    return progress


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
    from .mask_files import check_mask_output, write_liver_mask

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
        "quality": result.quality.to_dict() if result.quality is not None else None,
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

        init = shipped_start_model([case.image for case in cases], config.modality)
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


def run_fill(job: dict, emit: Emit, cancel: CancelToken) -> dict:
    """*Fill from painted slices* as one job (``fill.fill_from_painted``): the image and its painted label in
    (a slice holding liver is painted, as in ``train``), the filled mask out, written only when complete."""
    from .fill import fill_from_painted
    from .fill_recipe import FILL_RECIPE
    from .image_io import atomic_path
    from .mask_files import check_mask_output, write_liver_mask
    from .training_files import check_setting_types, load_training_case

    image_path = Path(os.fspath(_require(job, "image"))).expanduser()
    painted_path = Path(os.fspath(_require(job, "painted"))).expanduser()
    output = check_mask_output(_require(job, "output"))
    settings = job.get("settings") or {}
    if not isinstance(settings, dict):
        raise LiverUNetError("The job's 'settings' must be an object of training settings.")
    check_setting_types(settings)
    for p in (image_path, painted_path):
        if not p.exists():
            raise LiverUNetError(f"{p} not found.")
    progress = _progress_callback(emit, cancel)
    progress(ProgressEvent(Stage.LOADING, 0.0, f"Reading {image_path.name} and {painted_path.name}"))
    case = load_training_case("painted slices", image_path, painted_path,
                              label_value=_whole_number(job, "label_value", None), segment_name=job.get("segment"))
    modality = job.get("modality") or None
    if modality not in (None, "ct", "mri"):
        raise LiverUNetError(f"The job's 'modality' must be ct, mri or null; got {modality!r}.")
    start = job.get("start_model") or None  # a model file, "shipped" or None (random weights)
    if start == SHIPPED_START:  # the shipped model of the image's modality, loaded once by a warm worker
        from .model_file import shipped_start_model

        start = shipped_start_model([case.image], modality)
    start_model = cached_model(start) if start is not None else None
    cancel.check()
    result = fill_from_painted(case.image, case.label, start_model, FILL_RECIPE.with_overrides(settings),
                               device=job.get("device") or "auto", progress=progress, cancel=cancel, modality=modality)
    progress(ProgressEvent(Stage.WRITING, 1.0, f"Writing {output.name}"))
    with atomic_path(output) as staged:  # renamed only when written and not cancelled meanwhile
        write_liver_mask(result.mask, staged)
        cancel.check()
    return {
        "event": "result",
        "kind": "fill",
        "output": str(output),
        "painted_slices": result.painted,
        "device": result.device,
        "seconds": result.seconds,
        "liver_ml": float(result.mask.array.sum()) * result.mask.voxel_volume_ml,
        "warnings": list(result.warnings),
        "model": result.model,
        "quality": result.quality.to_dict() if result.quality is not None else None,
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


JOBS = {"segment": run_segment, "train": run_train, "fill": run_fill, "devices": run_devices}


def run_segment_batch(job: dict, emit: Emit, cancel: CancelToken) -> dict:
    """A whole batch of files (LiverUNetLib.batch.worker_job): Slicer's console script runs it in the warm worker."""
    from .batch.worker_job import run_segment_batch as run_batch_job

    return run_batch_job(job, emit, cancel)


JOBS["segment_batch"] = run_segment_batch


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
