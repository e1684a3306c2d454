"""Run the effect's worker jobs: segment, or fill the slices between the painted ones.

"Fill from painted slices" is one worker job, ``fill`` (``LiverUNetLib.fill.fill_from_painted``, what
``liverunet fill`` and the fill benchmarks run too): it fine-tunes the chosen model (or trains from random
weights) on this volume's painted slices only, segments the volume with that throw-away model, and keeps the
painted slices exactly as painted: a learned "Fill between slices". It runs on the warm worker when that is
free, so the click does not wait for torch to start. Everything runs through the scheduler; the segment is
changed only at the very end, through :func:`~.effect_core.applyMask`. Closing the scene cancels the
job: the segment it was started on is gone, so there is nothing left to write into.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.fill_recipe import FILL_RECIPE
from LiverUNetLib.progress import ProgressEvent
from LiverUNetLib.shipped_models import SHIPPED_START

from .effect_core import EffectAccess, EffectSnapshot, applyMask, fillUnpainted, takeSnapshot
from .jobs import SegmentJob, newWorkDir, resolveModelPath, writeVolumeFile
from .logic import JobResult
from .models import shippedModelPaths
from .options import Device, EffectMode, optionalPath, toDevice
from .warm_worker import WarmJob, WarmWorker, newWorkerJob
from .worker_runner import EventKind, JobStatus, Scheduler, WorkerEvent, WorkerOutcome, WorkerProcess

# Fine-tuning on one volume's painted slices: the settings the fill benchmarks measured
# (LiverUNetLib/fill_recipe.py). The panel's "Fill epochs" overrides the fine-tuning epochs only.
FILL_SETTINGS: dict[str, Any] = FILL_RECIPE.train_settings(fine_tune=True)


def fillTrainSettings(fineTune: bool, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The fill's training settings with the panel's overrides, as the worker's ``fill`` job applies them.
    Starting from random weights keeps the recipe's own (longer) schedule: "Fill epochs" and a learning
    rate are fine-tuning values and would leave it untrained."""
    return FILL_RECIPE.with_overrides(overrides).train_settings(fineTune)


class EffectJob:
    """One run of the effect. Call :meth:`start`; ``onFinished`` gets a :class:`JobResult` once."""

    def __init__(
        self,
        effect: EffectAccess,
        mode: EffectMode,
        scheduler: Scheduler,
        modeSet: Any,
        model: Optional[Path] = None,
        device: Device | str | None = None,
        fillSettings: Optional[Mapping[str, Any]] = None,
        onProgress: Optional[Callable[[ProgressEvent], None]] = None,
        onLog: Optional[Callable[[str], None]] = None,
        onFinished: Optional[Callable[[JobResult], None]] = None,
        workerCommand: Optional[Sequence[str]] = None,
        workerEnvironment: Optional[Mapping[str, str]] = None,
        tempRoot: Optional[Path] = None,
        warmWorker: Optional[WarmWorker] = None,
    ) -> None:
        self.effect = effect
        self.mode = mode
        self.scheduler = scheduler
        self.modeSet = modeSet
        self.modelArgument = model  # checked by start(), where every input problem is reported
        self.deviceArgument = device
        self.model: Optional[Path] = None
        self.device = Device.AUTO
        self.fillSettings = dict(fillSettings or {})  # overrides of the fine-tuning settings
        self.onProgress = onProgress
        self.onLog = onLog
        self.onFinished = onFinished
        self.workerCommand = workerCommand
        self.workerEnvironment = workerEnvironment
        self.tempRoot = tempRoot
        self.warmWorker = warmWorker  # segmenting and filling run there when it is free
        self.snapshot: Optional[EffectSnapshot] = None
        self._folder: Optional[Path] = None
        self._process: Optional[Union[WorkerProcess, WarmJob]] = None
        self._cancelled = False
        self._done = False
        self._scene = None
        self._sceneObserver: Optional[int] = None

    @property
    def running(self) -> bool:
        return self._folder is not None and not self._done

    def start(self) -> None:
        """Check the model, the device and the editor, and start. Input problems raise :class:`LiverUNetError`
        here; any failure while starting (writing the images: ``OSError``) is raised too and leaves the job
        ended (``running`` False) with its folder removed. A worker that cannot start reports FAILED."""
        self.model = resolveModelPath(self.modelArgument)
        self.device = toDevice(self.deviceArgument)
        fill = self.mode is EffectMode.FILL_FROM_PAINTED
        self.snapshot = takeSnapshot(self.effect, needPainted=fill)
        self._folder = newWorkDir(self.tempRoot)
        try:
            writeVolumeFile(self.snapshot.volume, self._folder / "source.nrrd")
            if fill:
                assert self.snapshot.painted is not None
                label = self.snapshot.volume.with_array(self.snapshot.painted.mask.astype(np.uint8))
                writeVolumeFile(label, self._folder / "painted.nrrd")
            self._observeSceneClose()
            if fill:
                self._startFilling()
            else:
                self._startSegmenting()
        except BaseException:
            self._done = True
            self._stopObserving()
            self._cleanup()
            raise

    def cancel(self) -> None:
        self._cancelled = True
        if self._process is not None:
            self._process.cancel()

    def _observeSceneClose(self) -> None:
        assert self.snapshot is not None
        scene = self.snapshot.segmentationNode.GetScene()
        if scene is not None:
            self._scene = scene
            self._sceneObserver = scene.AddObserver(scene.StartCloseEvent, lambda caller, event: self.cancel())

    def _stopObserving(self) -> None:
        if self._scene is not None and self._sceneObserver is not None:
            self._scene.RemoveObserver(self._sceneObserver)
        self._scene, self._sceneObserver = None, None

    # --- steps ----------------------------------------------------------------------------------
    def _startFilling(self) -> None:
        assert self._folder is not None
        # Fine-tune the chosen model; the automatic entry means the shipped model of the image's modality,
        # which the worker picks (random weights when this build ships none).
        start = self.model if self.model is not None else (SHIPPED_START if shippedModelPaths() else None)
        job = {"kind": "fill", "image": str(self._folder / "source.nrrd"), "painted": str(self._folder / "painted.nrrd"),
               "output": str(self._folder / "liver.nrrd"), "start_model": optionalPath(start),
               "device": self.device.value, "settings": dict(self.fillSettings)}
        self._run(job, "fill", lambda outcome: self._write(Path(job["output"]), outcome), warm=True)

    def _startSegmenting(self) -> None:
        assert self._folder is not None
        job = SegmentJob(self._folder / "source.nrrd", self._folder / "liver.nrrd", self.model, self.device, False)
        self._run(job.toDict(), "segment", lambda outcome: self._write(job.output, outcome), warm=True)

    def _write(self, output: Path, outcome: WorkerOutcome) -> None:
        from LiverUNetLib.image_io import read_image

        assert self.snapshot is not None
        prediction = read_image(output).array > 0
        if self.snapshot.painted is not None:
            prediction = fillUnpainted(self.snapshot.painted, prediction)
        applyMask(self.effect, self.snapshot, prediction, self.modeSet)
        self._end(JobResult(JobStatus.SUCCEEDED, "", self.snapshot.segmentId,
                            list(outcome.result.get("warnings") or []), outcome.result.get("quality")))

    # --- plumbing -------------------------------------------------------------------------------
    def _run(self, job: dict, name: str, then: Callable[[WorkerOutcome], None], warm: bool = False) -> None:
        assert self._folder is not None

        def onEvent(event: WorkerEvent) -> None:
            if event.kind is EventKind.PROGRESS and event.progress is not None and self.onProgress is not None:
                self.onProgress(event.progress)
            elif event.kind is EventKind.LOG and self.onLog is not None:
                self.onLog(event.text)

        def onDone(outcome: WorkerOutcome) -> None:
            if outcome.status is not JobStatus.SUCCEEDED:
                self._end(JobResult(outcome.status, outcome.message))
                return
            try:
                then(outcome)
            except LiverUNetError as error:
                self._end(JobResult(JobStatus.FAILED, str(error)))
            except Exception as error:  # report, never leave the segment half-changed
                self._end(JobResult(JobStatus.FAILED, f"Could not use the worker's result: {type(error).__name__}: {error}"))

        self._process = newWorkerJob(job, self._folder / name, self.scheduler, onEvent, onDone, self.workerCommand,
                                     self.workerEnvironment, self.warmWorker if warm else None)
        self._process.start()

    def _end(self, result: JobResult) -> None:
        if self._done:
            return
        self._done = True
        self._stopObserving()
        self._cleanup()
        if self.onFinished is not None:
            self.onFinished(result)

    def _cleanup(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
