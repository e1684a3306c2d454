"""Segment Editor effect "Liver U-Net": segment the liver, or fill it in from a few painted slices.

Qt shell only: the work is ``LiverUNetSlicerLib.effect_jobs.EffectJob`` (tested against Slicer's
real segment editor logic). Slicer's loader finds this class by the file name (``SegmentEditorEffect``)
and the package by the folder name (``SegmentEditorLiverUNetLib``), which must not be
``LiverUNetLib``: the loader would replace that package in ``sys.modules``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import qt

import slicer
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.progress import ProgressEvent
from LiverUNetSlicerLib.effect_jobs import FILL_SETTINGS, EffectJob
from LiverUNetSlicerLib.logic import JobResult
from LiverUNetSlicerLib.models import ModelLibrary, modelChoices
from LiverUNetSlicerLib.options import Device, EffectMode
from LiverUNetSlicerLib.run_state import JobRunState
from LiverUNetSlicerLib.slice_suggestions import (SliceTargets, jumpToNext, leastSureTargets, paintTargets,
                                                  paintText, qualityOf, qualityText)
from LiverUNetSlicerLib.warm_worker import WarmWorker
from LiverUNetSlicerLib.worker_runner import JobStatus

MODE, MODEL, DEVICE, EPOCHS = "LiverUNet.Mode", "LiverUNet.ModelPath", "LiverUNet.Device", "LiverUNet.FillEpochs"


def enumParameter(enumType, text: str, default):
    try:
        return enumType(text)
    except ValueError:
        return default


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Segments into the selected segment with undo, masking and overlap rules like any other effect."""

    def __init__(self, scriptedEffect) -> None:
        scriptedEffect.name = "Liver U-Net"
        scriptedEffect.title = "Liver U-Net"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.job: Optional[EffectJob] = None
        self.run = JobRunState(self._setRunning)
        self.library = ModelLibrary()
        self.warmWorker: Optional[WarmWorker] = None  # started on the first Apply, kept for the next ones
        self.workerCommand: Optional[list[str]] = None  # None: PythonSlicer -m LiverUNetLib.worker
        self.targets: Optional[SliceTargets] = None  # the slices "Jump to next slice" visits

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self) -> str:
        return ("<html>Liver segmentation with a U-Net.<p><b>Segment the whole volume</b>: the chosen model segments "
                "the source volume into the selected segment.<p><b>Fill from painted slices</b>: outline the whole "
                "liver on a few slices (every 5th to 10th) in the selected segment; the model is fine-tuned on those "
                "slices and fills the others, keeping your slices as painted. Undo works as usual.<p>Licences of the shipped "
                "weights: MRI (CHAOS data) CC BY-NC-SA 4.0, <b>non-commercial use only</b>; CT (BTCV data) CC BY 4.0.</html>")

    # --- options ---------------------------------------------------------------------------------
    def setupOptionsFrame(self) -> None:
        self.modeComboBox = qt.QComboBox()
        for mode in EffectMode:
            self.modeComboBox.addItem(mode.label(), mode.value)
        self.scriptedEffect.addLabeledOptionsWidget("Mode:", self.modeComboBox)
        self.modelComboBox = qt.QComboBox()
        self.scriptedEffect.addLabeledOptionsWidget("Model:", self.modelComboBox)
        self.deviceComboBox = qt.QComboBox()
        for device in Device:
            self.deviceComboBox.addItem(device.label(), device.value)
        self.scriptedEffect.addLabeledOptionsWidget("Device:", self.deviceComboBox)
        self.epochsSpinBox = qt.QSpinBox()
        self.epochsSpinBox.setRange(1, 500)
        self.epochsSpinBox.toolTip = "Fine-tuning epochs for 'Fill from painted slices'."
        self.scriptedEffect.addLabeledOptionsWidget("Fill epochs:", self.epochsSpinBox)
        self.applyButton = qt.QPushButton("Apply")
        self.applyButton.objectName = self.__class__.__name__ + "Apply"
        self.scriptedEffect.addOptionsWidget(self.applyButton)
        self.progressBar = qt.QProgressBar()
        self.progressBar.visible = False
        self.scriptedEffect.addOptionsWidget(self.progressBar)
        self.statusLabel = qt.QLabel()
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)
        self.slicesLabel = qt.QLabel()  # the result's estimate, the least-sure slices or the slices to paint next
        self.slicesLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.slicesLabel)
        self.suggestButton = qt.QPushButton("Suggest slices to paint")
        self.suggestButton.toolTip = "Which unpainted slices to paint next, from the slices painted so far."
        self.jumpButton = qt.QPushButton("Jump to next slice")
        self.jumpButton.toolTip = "Move the slice views to the next slice named above."
        self.jumpButton.enabled = False
        row = qt.QHBoxLayout()
        row.addWidget(self.suggestButton)
        row.addWidget(self.jumpButton)
        self.scriptedEffect.addOptionsWidget(row)
        self.suggestButton.connect("clicked()", self.onSuggest)
        self.jumpButton.connect("clicked()", self.onJump)
        for combo in (self.modeComboBox, self.modelComboBox, self.deviceComboBox):
            combo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.epochsSpinBox.connect("valueChanged(int)", self.updateMRMLFromGUI)
        self.applyButton.connect("clicked()", self.onApply)

    def setMRMLDefaults(self) -> None:
        self.scriptedEffect.setParameterDefault(MODE, EffectMode.SEGMENT.value)
        self.scriptedEffect.setParameterDefault(MODEL, "")
        self.scriptedEffect.setParameterDefault(DEVICE, Device.AUTO.value)
        self.scriptedEffect.setParameterDefault(EPOCHS, FILL_SETTINGS["epochs"])

    def updateGUIFromMRML(self) -> None:
        widgets = (self.modeComboBox, self.modelComboBox, self.deviceComboBox, self.epochsSpinBox)
        blocked = [w.blockSignals(True) for w in widgets]
        self.modelComboBox.clear()
        items, modelIndex = modelChoices(self.library.entries(), self.scriptedEffect.parameter(MODEL))
        for label, data in items:
            self.modelComboBox.addItem(label, data)
        self.modelComboBox.currentIndex = modelIndex
        for combo, name in ((self.modeComboBox, MODE), (self.deviceComboBox, DEVICE)):
            index = combo.findData(self.scriptedEffect.parameter(name))
            combo.currentIndex = max(index, 0)
        self.epochsSpinBox.value = self.scriptedEffect.integerParameter(EPOCHS)
        self.epochsSpinBox.enabled = self.mode() is EffectMode.FILL_FROM_PAINTED
        for w, b in zip(widgets, blocked):
            w.blockSignals(b)

    def updateMRMLFromGUI(self) -> None:
        self.scriptedEffect.setParameter(MODE, self.modeComboBox.currentData or EffectMode.SEGMENT.value)
        self.scriptedEffect.setParameter(MODEL, self.modelComboBox.currentData or "")
        self.scriptedEffect.setParameter(DEVICE, self.deviceComboBox.currentData or Device.AUTO.value)
        self.scriptedEffect.setParameter(EPOCHS, self.epochsSpinBox.value)
        self.epochsSpinBox.enabled = self.mode() is EffectMode.FILL_FROM_PAINTED

    def mode(self) -> EffectMode:
        return enumParameter(EffectMode, self.scriptedEffect.parameter(MODE), EffectMode.SEGMENT)

    # --- running ---------------------------------------------------------------------------------
    def onApply(self) -> None:
        if self.run.running:
            self.statusLabel.text = "Cancelling..."
            self.run.cancel()
            return
        from LiverUNetGuiLib.torch_setup import ensureTorch

        if not self.scriptedEffect.confirmCurrentSegmentVisible() or not ensureTorch():
            return
        self.statusLabel.text = "Fine-tuning on the painted slices..." if self.mode() is EffectMode.FILL_FROM_PAINTED else "Segmenting..."
        try:
            self.run.start(self._startJob, self.onFinished)
        except LiverUNetError as error:
            self.statusLabel.text = "Not started; the segment is unchanged."
            slicer.util.errorDisplay(str(error), windowTitle="Liver U-Net")
        except Exception as error:  # writing the job's images (disk full...): say so, the segment is unchanged
            self.statusLabel.text = "Not started; the segment is unchanged."
            slicer.util.errorDisplay(f"The job could not start: {type(error).__name__}: {error}", windowTitle="Liver U-Net")

    def _startJob(self, onFinished) -> EffectJob:
        """Build and start the job; every input problem (a stale model path included) raises here."""
        from LiverUNetGuiLib.qt_scheduler import QtTimerScheduler

        modelText = self.scriptedEffect.parameter(MODEL)
        environment = slicer.util.startupEnvironment() if hasattr(slicer.util, "startupEnvironment") else None
        if self.warmWorker is None:
            self.warmWorker = WarmWorker(self.workerCommand, env=environment)
        self.job = EffectJob(
            self.scriptedEffect, self.mode(), QtTimerScheduler(), slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet,
            model=Path(modelText) if modelText else None,
            device=enumParameter(Device, self.scriptedEffect.parameter(DEVICE), Device.AUTO),
            fillSettings={"epochs": self.scriptedEffect.integerParameter(EPOCHS)},
            onProgress=self.onProgress, onFinished=onFinished, workerCommand=self.workerCommand,
            workerEnvironment=environment, warmWorker=self.warmWorker)
        self.job.start()
        return self.job

    def onProgress(self, event: ProgressEvent) -> None:
        if event.fraction is not None:
            self.progressBar.value = int(round(100 * event.fraction))
        self.statusLabel.text = event.message or event.stage.value

    def onFinished(self, result: JobResult) -> None:
        if result.status is JobStatus.SUCCEEDED:
            self.statusLabel.text = "Done. Undo (Ctrl+Z) restores the segment as it was."
            self._showSlices(result)
        elif result.status is JobStatus.CANCELLED:
            self.statusLabel.text = "Cancelled; the segment is unchanged."
        else:
            self.statusLabel.text = "Failed; the segment is unchanged."
            slicer.util.errorDisplay(result.message, windowTitle="Liver U-Net")

    # --- slices to look at -----------------------------------------------------------------------
    def _showSlices(self, result: JobResult) -> None:
        """After Segment: the estimate and its least-sure slices. After Fill: where to check and paint next
        (the estimate of a fill is not calibrated for fills, so only its slices are shown)."""
        snapshot = self.job.snapshot if self.job is not None else None
        quality = qualityOf({"quality": result.quality})
        if snapshot is not None and snapshot.painted is not None:  # a fill: its uncertainty when the worker sent it
            uncertainty = quality.slice_uncertainty if quality is not None else None
            targets = paintTargets(snapshot.volume, snapshot.painted.annotated.tolist(), uncertainty)
            self._setTargets(targets, paintText(targets, afterFill=True))
        elif snapshot is not None and quality is not None:
            self._setTargets(leastSureTargets(quality, snapshot.volume), qualityText(quality))
        else:
            self._setTargets(None, "")

    def onSuggest(self) -> None:
        """While painting: from the painted slices alone (no model has seen this painting yet)."""
        from LiverUNetSlicerLib.effect_core import takeSnapshot

        try:
            snapshot = takeSnapshot(self.scriptedEffect, needPainted=True)
        except LiverUNetError as error:
            self._setTargets(None, str(error))
            return
        targets = paintTargets(snapshot.volume, snapshot.painted.annotated.tolist())
        self._setTargets(targets, paintText(targets, afterFill=False))

    def onJump(self) -> None:
        if self.targets is not None:
            sliceIndex = jumpToNext(self.targets)
            self.jumpButton.toolTip = f"Showing slice {sliceIndex}; press again for the next one."

    def _setTargets(self, targets: Optional[SliceTargets], text: str) -> None:
        self.targets = targets
        self.slicesLabel.text = text
        self.jumpButton.enabled = bool(targets is not None and targets.slices)

    def _setRunning(self, running: bool) -> None:
        self.applyButton.text = "Cancel" if running else "Apply"
        self.progressBar.visible = running
        self.progressBar.value = 0
        for widget in (self.modeComboBox, self.modelComboBox, self.deviceComboBox, self.epochsSpinBox, self.suggestButton):
            widget.enabled = not running

    def cleanup(self) -> None:
        self.run.cancel()
        if self.warmWorker is not None:
            self.warmWorker.shutdown()
