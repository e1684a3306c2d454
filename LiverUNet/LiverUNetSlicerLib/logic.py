"""LiverUNetLogic: segment and train from MRML nodes, blocking (console, batch) or not (GUI).

Usable without the widget and without Qt::

    import LiverUNet
    logic = LiverUNet.LiverUNetLogic()
    segmentationNode = logic.segmentLiver(getNode("MRHead"))          # blocks, returns the node
    modelPath = logic.train([TrainingCaseNodes(volume, segmentation, "Segment_1")])
    logic.segmentFiles(["a.nii.gz", "b.nrrd"], "/tmp/out")            # writes *.seg.nrrd

The long work runs in ``python -m LiverUNetLib.worker`` (PythonSlicer inside Slicer). The
``...Async`` forms return a :class:`JobHandle` at once; their callbacks, and every MRML change,
run from the scheduler (a main-thread ``QTimer`` in the GUI). Nothing in the scene changes
until a job has succeeded, so failure or cancel leaves segments and models as they were.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

import slicer
from LiverUNetLib.errors import CancelledError, LiverUNetError
from LiverUNetLib.progress import ProgressEvent

from .device_facts import DeviceFacts
from .jobs import SegmentJob, TrainCaseFiles, TrainJob, fileStem, newWorkDir, resolveModelPath, resolveStartModel, writeVolumeFile
from .liver_segment import SegmentBackup, newSegmentationNode, restoreSegment, writeLiverMask
from .models import ModelLibrary, writeProvenance
from .nodes import nodeName, volumeFromNode
from .options import Device, toDevice
from .painted import paintedSlicesOfMask, segmentMask, sparseLabelFromSegment
from .segmentation_geometry import requireWritableOnVolumeGrid
from .subject_hierarchy import placeBeside
from .warm_worker import WarmJob, WarmWorker, newWorkerJob
from .worker_runner import (BlockingScheduler, EventKind, JobStatus, Scheduler, WorkerEvent, WorkerOutcome,
                            WorkerProcess)

ModelArg = Union[str, os.PathLike, None]
ProgressCallback = Callable[[ProgressEvent], None]
LogCallback = Callable[[str], None]


NOT_LIVER_LABEL = 2


def notLiverMask(volumeNode, segmentationNode, liverSegmentId: str) -> Optional[np.ndarray]:
    """The "Not liver" segment beside the liver segment, if painted: its slices teach where the liver ends."""
    from LiverUNetLib.segmentation_file import NOT_LIVER_NAME  # imports SimpleITK: only when a job starts

    notLiverId = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(NOT_LIVER_NAME)
    if not notLiverId or notLiverId == liverSegmentId:
        return None
    mask = segmentMask(volumeNode, segmentationNode, notLiverId)
    return mask if mask.any() else None


@dataclass
class TrainingCaseNodes:
    """One training case in the scene: a volume and the segment where the liver was painted on it."""

    volumeNode: slicer.vtkMRMLScalarVolumeNode
    segmentationNode: slicer.vtkMRMLSegmentationNode
    segmentId: str
    name: str = ""


@dataclass
class JobResult:
    """How an asynchronous job ended. ``value`` is the segmentation node or the model path."""

    status: JobStatus
    message: str = ""
    value: Any = None
    warnings: list[str] = field(default_factory=list)
    # a segmentation's quality estimate (LiverUNetLib.quality.QualityEstimate.to_dict), when the worker sent one
    quality: Optional[dict[str, Any]] = None

    @property
    def succeeded(self) -> bool:
        return self.status is JobStatus.SUCCEEDED


FinishedCallback = Callable[[JobResult], None]


class JobHandle:
    """A running job: ``cancel()`` it, or ask whether it is still ``running``."""

    def __init__(self, process: Union[WorkerProcess, WarmJob]) -> None:
        self._process = process

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def pid(self) -> Optional[int]:
        """The worker's process id (for diagnostics)."""
        return self._process.pid

    def cancel(self) -> None:
        self._process.cancel()


class LiverUNetLogic:
    """MRML-facing operations of the LiverUNet module (no Qt, no widget)."""

    def __init__(
        self,
        scheduler: Optional[Scheduler] = None,
        modelLibrary: Optional[ModelLibrary] = None,
        workerCommand: Optional[Sequence[str]] = None,
        workerEnvironment: Optional[Mapping[str, str]] = None,
        tempRoot: Optional[Path] = None,
        keepWorkerWarm: bool = False,
    ) -> None:
        """``keepWorkerWarm``: segment in one long-lived worker process (:mod:`.warm_worker`), so every
        segmentation after the first skips the worker's start-up; the GUI and the effect turn it on."""
        self.scheduler = scheduler
        self.modelLibrary = modelLibrary or ModelLibrary()
        self.workerCommand = list(workerCommand) if workerCommand else None
        self.workerEnvironment = dict(workerEnvironment) if workerEnvironment is not None else None
        self.tempRoot = tempRoot
        self._backups: dict[str, SegmentBackup] = {}
        self._jobs: list[JobHandle] = []
        self.warmWorker = WarmWorker(self.workerCommand, self.workerEnvironment) if keepWorkerWarm else None

    # --- segmenting -----------------------------------------------------------------------------
    def segmentLiver(self, volumeNode, segmentationNode=None, model: ModelArg = None, device=None,
                     tta: bool = False, onProgress: Optional[ProgressCallback] = None,
                     timeoutSeconds: Optional[float] = None) -> slicer.vtkMRMLSegmentationNode:
        """Segment the liver and wait; return the segmentation node holding the "Liver" segment.

        ``segmentationNode`` None creates one named after the volume. An existing "Liver" segment
        is replaced; :meth:`restorePreviousLiver` puts the old one back.
        """
        return self._wait(lambda scheduler, done: self.segmentLiverAsync(
            volumeNode, segmentationNode, model, device, tta, onProgress, None, done, scheduler), timeoutSeconds)

    def segmentLiverAsync(self, volumeNode, segmentationNode=None, model: ModelArg = None, device=None,
                          tta: bool = False, onProgress: Optional[ProgressCallback] = None,
                          onLog: Optional[LogCallback] = None, onFinished: Optional[FinishedCallback] = None,
                          scheduler: Optional[Scheduler] = None) -> JobHandle:
        """Start segmenting; input problems raise :class:`LiverUNetError` here, before anything runs."""
        volume = volumeFromNode(volumeNode)
        if segmentationNode is not None:
            requireWritableOnVolumeGrid(segmentationNode, volumeNode)
        modelPath, deviceChoice = resolveModelPath(model), toDevice(device)
        workDir = newWorkDir(self.tempRoot)
        job = SegmentJob(workDir / "input.nrrd", workDir / "liver.nrrd", modelPath, deviceChoice, tta)
        try:
            writeVolumeFile(volume, job.input)
        except Exception:
            _removeQuietly(workDir)
            raise

        def finish(outcome: WorkerOutcome) -> JobResult:
            from LiverUNetLib.image_io import read_image

            if volumeNode.GetScene() is None or (segmentationNode is not None and segmentationNode.GetScene() is None):
                raise LiverUNetError("The input volume or output segmentation was removed while the job ran; "
                                     "nothing was written.")
            mask = read_image(job.output).array > 0
            target = segmentationNode if segmentationNode is not None else newSegmentationNode(volumeNode)
            try:
                self._backups[target.GetID()] = writeLiverMask(target, volumeNode, mask)
            except Exception:
                if segmentationNode is None:
                    target.GetScene().RemoveNode(target)
                raise
            placeBeside(target, volumeNode)
            used = outcome.result.get("model")  # which model ran and why (the shipped one of the image's modality)
            return JobResult(JobStatus.SUCCEEDED, f"segmented with {used}" if used else "", target,
                             list(outcome.result.get("warnings") or []), outcome.result.get("quality"))

        return self._start(job.toDict(), workDir, finish, onProgress, onLog, onFinished, scheduler, warm=True)

    def restorePreviousLiver(self, segmentationNode: slicer.vtkMRMLSegmentationNode) -> bool:
        """Undo the last result written into ``segmentationNode``; False when there is nothing to undo."""
        backup = self._backups.pop(segmentationNode.GetID(), None) if segmentationNode is not None else None
        if backup is None:
            return False
        restoreSegment(backup)
        return True

    def canRestore(self, segmentationNode: Optional[slicer.vtkMRMLSegmentationNode]) -> bool:
        return segmentationNode is not None and segmentationNode.GetID() in self._backups

    # --- training -------------------------------------------------------------------------------
    def train(self, cases: Sequence[TrainingCaseNodes], outputPath: ModelArg = None,
              settings: Optional[Mapping[str, Any]] = None, initModel: ModelArg = None, device=None,
              onProgress: Optional[ProgressCallback] = None, timeoutSeconds: Optional[float] = None) -> Path:
        """Train on the painted slices of ``cases`` and wait; return the new model's path."""
        return self._wait(lambda scheduler, done: self.trainAsync(
            cases, outputPath, settings, initModel, device, onProgress, None, done, scheduler), timeoutSeconds)

    def trainAsync(self, cases: Sequence[TrainingCaseNodes], outputPath: ModelArg = None,
                   settings: Optional[Mapping[str, Any]] = None, initModel: ModelArg = None, device=None,
                   onProgress: Optional[ProgressCallback] = None, onLog: Optional[LogCallback] = None,
                   onFinished: Optional[FinishedCallback] = None, scheduler: Optional[Scheduler] = None) -> JobHandle:
        """Start training. ``settings`` are ``TrainConfig`` fields; the model is written only on success."""
        if not cases:
            raise LiverUNetError("No training case is selected. Add at least one volume with a painted liver segment.")
        initPath, deviceChoice = resolveStartModel(initModel), toDevice(device)
        workDir = newWorkDir(self.tempRoot)
        try:
            files, described = self._writeCases(cases, workDir)
        except Exception:
            _removeQuietly(workDir)
            raise
        output = Path(outputPath) if outputPath is not None else self.modelLibrary.newModelPath(
            f"liver_{datetime.now().strftime('%Y%m%d-%H%M%S')}")
        existedBefore = output.exists()
        jobSettings = dict(settings or {})
        jobSettings.setdefault("device", deviceChoice.value)
        job = TrainJob(files, output, jobSettings, initPath)

        def finish(outcome: WorkerOutcome) -> JobResult:
            if not output.is_file():
                raise LiverUNetError(f"The worker reported success but wrote no model at {output}.")
            writeProvenance(output, {
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "cases": described, "settings": jobSettings, "initial_model": job.init and str(job.init),
                "worker_result": outcome.result,
            })
            return JobResult(JobStatus.SUCCEEDED, "", output, list(outcome.result.get("warnings") or []))

        resumeFile = output.with_name(output.name + ".resume")  # the engine's per-epoch checkpoint
        resumeExisted = resumeFile.exists()

        def discard() -> None:  # failed or cancelled: keep nothing of this run in the model folder
            if not existedBefore and output.exists():
                output.unlink()
            if not resumeExisted and resumeFile.exists():
                resumeFile.unlink()

        return self._start(job.toDict(), workDir, finish, onProgress, onLog, onFinished, scheduler, discard)

    def _writeCases(self, cases: Sequence[TrainingCaseNodes], workDir: Path) -> tuple[list[TrainCaseFiles], list[dict]]:
        files, described = [], []
        for index, case in enumerate(cases):
            volume = volumeFromNode(case.volumeNode, "training volume")
            mask = segmentMask(case.volumeNode, case.segmentationNode, case.segmentId)
            segmentName = case.segmentationNode.GetSegmentation().GetSegment(case.segmentId).GetName()
            what = f"Segment '{segmentName}' of '{nodeName(case.segmentationNode)}'"
            sparseLabelFromSegment(volume, mask, what)  # refuses an unpainted segment with a clear message
            painted = paintedSlicesOfMask(volume, mask)
            name = case.name or f"{nodeName(case.volumeNode)}"
            image, label = workDir / f"case{index}_image.nrrd", workDir / f"case{index}_label.nrrd"
            writeVolumeFile(volume, image)
            labelArray, emptyValue = mask.astype(np.uint8), None
            notLiver = notLiverMask(case.volumeNode, case.segmentationNode, case.segmentId)
            if notLiver is not None:
                labelArray[notLiver & (labelArray == 0)] = NOT_LIVER_LABEL
                emptyValue = NOT_LIVER_LABEL
            writeVolumeFile(volume.with_array(labelArray), label)
            files.append(TrainCaseFiles(name, image, label, 1, emptyValue))
            described.append({"name": name, "volume": nodeName(case.volumeNode),
                              "segmentation": nodeName(case.segmentationNode), "segment": segmentName,
                              "painted_slices": list(painted.indices), "slice_count": painted.sliceCount})
        return files, described

    # --- files ----------------------------------------------------------------------------------
    def segmentFiles(self, inputPaths: Sequence[Union[str, os.PathLike]], outputDir: Union[str, os.PathLike],
                     model: ModelArg = None, device=None, tta: bool = False,
                     onLog: Optional[LogCallback] = None) -> list[Path]:
        """Segment image files (NIfTI, NRRD, MHA, DICOM folders) into ``outputDir/<name>.seg.nrrd``.

        Every file is tried; the errors are collected and raised together at the end.
        """
        outputFolder = Path(outputDir)
        outputFolder.mkdir(parents=True, exist_ok=True)
        written, errors = [], []
        for inputPath in inputPaths:
            source = Path(inputPath)
            target = outputFolder / f"{fileStem(source)}.seg.nrrd"
            job = SegmentJob(source.resolve(), target.resolve(), resolveModelPath(model), toDevice(device), tta)
            try:
                self._wait(lambda scheduler, done, job=job: self._start(
                    job.toDict(), newWorkDir(self.tempRoot), lambda outcome: JobResult(JobStatus.SUCCEEDED),
                    None, onLog, done, scheduler, warm=True), None)
                written.append(target)
                if onLog:
                    onLog(f"{source} -> {target}")
            except LiverUNetError as error:
                errors.append(f"{source}: {error}")
                if onLog:
                    onLog(f"{source}: FAILED: {error}")
        if errors:
            raise LiverUNetError(f"{len(errors)} of {len(inputPaths)} files failed:\n" + "\n".join(errors))
        return written

    # --- devices --------------------------------------------------------------------------------
    def deviceFactsAsync(self, onFinished: FinishedCallback, scheduler: Optional[Scheduler] = None) -> JobHandle:
        """Ask a worker what its torch can use; ``onFinished`` gets a :class:`JobResult` whose value is a
        :class:`~.device_facts.DeviceFacts`. Slicer's own process never imports torch."""
        def finish(outcome: WorkerOutcome) -> JobResult:
            return JobResult(JobStatus.SUCCEEDED, "", DeviceFacts.fromResult(outcome.result))

        return self._start({"kind": "devices"}, newWorkDir(self.tempRoot), finish, None, None, onFinished, scheduler)

    def deviceFacts(self, timeoutSeconds: Optional[float] = 120) -> DeviceFacts:
        """The blocking form of :meth:`deviceFactsAsync` (console, scripts)."""
        return self._wait(lambda scheduler, done: self.deviceFactsAsync(done, scheduler), timeoutSeconds)

    # --- jobs -----------------------------------------------------------------------------------
    def cancelAll(self) -> None:
        """Cancel every running job (module closed, scene closing)."""
        for handle in self._jobs:
            handle.cancel()

    def shutdownWorker(self) -> None:
        """Stop the warm worker process, if any (module closed); the next job starts a fresh one."""
        if self.warmWorker is not None:
            self.warmWorker.shutdown()

    @property
    def busy(self) -> bool:
        return any(handle.running for handle in self._jobs)

    def _start(self, job: dict, workDir: Path, finish: Callable[[WorkerOutcome], JobResult],
               onProgress: Optional[ProgressCallback], onLog: Optional[LogCallback],
               onFinished: Optional[FinishedCallback], scheduler: Optional[Scheduler],
               onNotSucceeded: Optional[Callable[[], None]] = None, warm: bool = False) -> JobHandle:
        """Run ``job`` in a worker; ``warm`` jobs (segmentation) use the warm worker when it is free."""
        scheduler = scheduler or self.scheduler
        if scheduler is None:
            raise RuntimeError("No scheduler: pass one (the GUI passes a QTimer scheduler) or use the blocking form.")

        def onEvent(event: WorkerEvent) -> None:
            if event.kind is EventKind.PROGRESS and onProgress is not None and event.progress is not None:
                onProgress(event.progress)
            elif event.kind is EventKind.LOG and onLog is not None:
                onLog(event.text)

        def onDone(outcome: WorkerOutcome) -> None:
            if outcome.status is JobStatus.SUCCEEDED:
                try:
                    result = finish(outcome)
                except LiverUNetError as error:
                    result = JobResult(JobStatus.FAILED, str(error))
                except Exception as error:  # a bug or an unreadable result: report it, keep the scene as it was
                    result = JobResult(JobStatus.FAILED, f"Could not use the worker's result: {type(error).__name__}: {error}")
            else:
                result = JobResult(outcome.status, outcome.message)
            if result.status is not JobStatus.SUCCEEDED and onNotSucceeded is not None:
                onNotSucceeded()
            self._jobs[:] = [h for h in self._jobs if h.running]
            if onFinished is not None:
                onFinished(result)

        process = newWorkerJob(job, workDir, scheduler, onEvent, onDone, self.workerCommand, self.workerEnvironment,
                               self.warmWorker if warm else None)
        handle = JobHandle(process)
        self._jobs.append(handle)
        process.start()
        return handle

    def _wait(self, startJob: Callable[[Scheduler, FinishedCallback], JobHandle], timeoutSeconds: Optional[float]) -> Any:
        scheduler = BlockingScheduler()
        results: list[JobResult] = []
        handle = startJob(scheduler, results.append)
        try:
            scheduler.runUntilIdle(timeoutSeconds)
        except (TimeoutError, KeyboardInterrupt):
            handle.cancel()
            scheduler.runUntilIdle()
            raise
        result = results[0]
        if result.status is JobStatus.CANCELLED:
            raise CancelledError()
        if result.status is JobStatus.FAILED:
            raise LiverUNetError(result.message)
        return result.value


def _removeQuietly(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
