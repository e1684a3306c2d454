"""The "Segment liver" section: model list, Segment/Cancel, progress, log, restore, Show 3D."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import qt

import slicer
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.progress import ProgressEvent
from LiverUNetSlicerLib.device_facts import DeviceFacts, deviceWarning
from LiverUNetSlicerLib.liver_segment import findLiverSegmentId
from LiverUNetSlicerLib.logic import JobHandle, JobResult, LiverUNetLogic
from LiverUNetSlicerLib.models import ModelEntry, licenceNote, shippedModelPaths
from LiverUNetSlicerLib.run_state import JobRunState
from LiverUNetSlicerLib.slice_suggestions import SliceTargets, jumpToNext, qualityOf, qualityText
from LiverUNetSlicerLib.torch_version import installedTorchVersion
from LiverUNetSlicerLib.worker_runner import JobStatus

from .parameters import LiverUNetParameterNode
from .torch_setup import ensureTorch

SEGMENT_TEXT = "Segment liver"
CANCEL_TEXT = "Cancel"


class SegmentPanel:
    def __init__(self, ui, logic: LiverUNetLogic, parameters: Callable[[], Optional[LiverUNetParameterNode]]) -> None:
        self.ui = ui
        self.logic = logic
        self.parameters = parameters
        self.run = JobRunState(self._setRunning)
        self._entries: list[ModelEntry] = []
        self.deviceFacts: Optional[DeviceFacts] = None
        self._segmentedVolume = None
        self._deviceQuery: Optional[JobHandle] = None
        self.targets: Optional[SliceTargets] = None  # the last result's least-sure slices
        self._addQualityRow(ui)
        ui.segmentButton.clicked.connect(self.onSegmentOrCancel)
        ui.restoreButton.clicked.connect(self.onRestore)
        ui.importModelButton.clicked.connect(self.onImportModel)
        ui.exportModelButton.clicked.connect(self.onExportModel)
        ui.modelComboBox.currentIndexChanged.connect(self.onModelChosen)
        ui.outputSegmentationSelector.currentNodeChanged.connect(self.onOutputChanged)
        self.refreshModels()
        qt.QTimer.singleShot(500, self.updateDeviceWarning)  # after the panel is shown

    def _addQualityRow(self, ui) -> None:
        """The last result's estimated Dice and least-sure slices, and a button that jumps the views there."""
        self.qualityLabel = qt.QLabel()
        self.qualityLabel.wordWrap = True
        self.jumpButton = qt.QPushButton("Jump to least sure slice")
        self.jumpButton.toolTip = "Move the slice views to the next of the slices the result is least sure on."
        self.jumpButton.enabled = False
        self.jumpButton.clicked.connect(self.onJump)
        row = qt.QHBoxLayout()
        row.addWidget(self.qualityLabel, 1)
        row.addWidget(self.jumpButton)
        ui.segmentCollapsibleButton.layout().addRow(row)

    def onJump(self) -> None:
        if self.targets is not None:
            sliceIndex = jumpToNext(self.targets)
            self.jumpButton.toolTip = f"Showing slice {sliceIndex}; press again for the next one."

    def _showQuality(self, result: Optional[JobResult], volumeNode) -> None:
        quality = qualityOf({"quality": result.quality}) if result is not None else None
        if quality is None or volumeNode is None:
            self.targets, self.qualityLabel.text = None, ""
        else:
            self.targets = SliceTargets.onNode(quality.least_sure_slices, quality.slice_axis, volumeNode)
            self.qualityLabel.text = qualityText(quality)
            self.log(self.qualityLabel.text)
        self.jumpButton.enabled = bool(self.targets is not None and self.targets.slices)

    def updateDeviceWarning(self) -> None:
        """Ask a worker once whether its torch has a GPU (torch is never imported in Slicer's process)."""
        if self.deviceFacts is not None or (self._deviceQuery is not None and self._deviceQuery.running):
            return
        if installedTorchVersion() is None:
            self.ui.deviceWarningLabel.text = ("PyTorch is not installed yet; it will be installed when you first "
                                               "segment or train.")
            return
        self.ui.deviceWarningLabel.text = "Checking for a GPU..."
        try:
            self._deviceQuery = self.logic.deviceFactsAsync(self._onDeviceFacts)
        except Exception as error:  # the worker's folder could not be made: only the note is missing
            self.ui.deviceWarningLabel.text = f"Could not check for a GPU ({error})."

    def _onDeviceFacts(self, result: JobResult) -> None:
        self._deviceQuery = None
        if result.succeeded:
            self.deviceFacts = result.value
            self.ui.deviceWarningLabel.text = deviceWarning(result.value)
        elif result.status is JobStatus.CANCELLED:  # scene closed: asked again at the next Segment
            self.ui.deviceWarningLabel.text = ""
        else:
            self.ui.deviceWarningLabel.text = (f"PyTorch could not be loaded ({result.message}); reinstall it in "
                                               "the PyTorch Utils module.")

    # --- state ----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.run.running

    def updateFromParameters(self) -> None:
        params = self.parameters()
        ready = params is not None and params.inputVolume is not None
        self.ui.segmentButton.enabled = ready or self.running
        self.ui.segmentButton.toolTip = "Segment the liver in the input volume" if ready else "Select an input volume"
        self.ui.restoreButton.enabled = (not self.running and params is not None
                                         and self.logic.canRestore(params.outputSegmentation))
        self._selectModel(params.modelPath if params is not None else None)

    def refreshModels(self, select: Optional[Path] = None) -> None:
        self._entries = self.logic.modelLibrary.entries()
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for entry in self._entries:
            combo.addItem(entry.name)
        if not self._entries:
            combo.addItem("No model yet: train one below")
        combo.blockSignals(wasBlocked)
        params = self.parameters()
        if select is not None and params is not None:
            params.modelPath = select
        self._selectModel(select if select is not None else (params.modelPath if params is not None else None))
        self.ui.exportModelButton.enabled = bool(self._entries)

    def selectedModel(self) -> Optional[ModelEntry]:
        index = self.ui.modelComboBox.currentIndex
        return self._entries[index] if 0 <= index < len(self._entries) else None

    def updateLicenceNote(self) -> None:
        """Name the licence of the weights that would run (the shipped MRI weights are non-commercial)."""
        self.ui.modelLicenceLabel.text = licenceNote(self.selectedModel(), shippedModelPaths())

    def _selectModel(self, path: Optional[Path]) -> None:
        for index, entry in enumerate(self._entries):
            if entry.path == path or (path is None and entry.isDefault):
                wasBlocked = self.ui.modelComboBox.blockSignals(True)
                self.ui.modelComboBox.currentIndex = index
                self.ui.modelComboBox.blockSignals(wasBlocked)
                break
        self.updateLicenceNote()

    # --- slots ----------------------------------------------------------------------------------
    def onModelChosen(self, index: int) -> None:
        params = self.parameters()
        entry = self.selectedModel()
        if params is not None and entry is not None:
            params.modelPath = entry.path
        self.updateLicenceNote()

    def onOutputChanged(self, node) -> None:
        self.ui.show3DButton.setSegmentationNode(node)
        self.updateFromParameters()

    def onSegmentOrCancel(self) -> None:
        if self.running:
            self.log("Cancelling...")
            self.run.cancel()
            return
        params = self.parameters()
        if params is None:
            return
        output = params.outputSegmentation
        if output is not None and findLiverSegmentId(output):
            if not slicer.util.confirmYesNoDisplay(
                    f"'{output.GetName()}' already has a Liver segment. Replace it? "
                    "(You can restore it afterwards with 'Restore previous Liver segment'.)"):
                return
        if not ensureTorch():
            return
        self.updateDeviceWarning()
        entry = self.selectedModel()
        if entry is None:
            slicer.util.errorDisplay("There is no model to segment with. Train one from painted segments first.")
            return
        self.log(f"Segmenting '{params.inputVolume.GetName()}' with {entry.name} on {params.device.label()}...")
        self._segmentedVolume = params.inputVolume  # the grid the result's slice indices refer to
        self._showQuality(None, None)  # the previous result's slices no longer apply
        try:
            self.run.start(lambda finished: self.logic.segmentLiverAsync(
                params.inputVolume, output, entry.path, params.device, params.tta,
                onProgress=self.onProgress, onLog=self.log, onFinished=finished), self.onFinished)
        except LiverUNetError as error:
            self.log(f"Not started: {error}")
            slicer.util.errorDisplay(str(error), windowTitle="Cannot segment")

    def onProgress(self, event: ProgressEvent) -> None:
        if event.fraction is not None:
            self.ui.progressBar.value = int(round(100 * event.fraction))
        self.ui.progressBar.format = f"{event.stage.value} %p%"

    def onFinished(self, result: JobResult) -> None:
        params = self.parameters()
        if result.status is JobStatus.SUCCEEDED:
            node = result.value
            if params is not None:
                params.outputSegmentation = node
            node.CreateClosedSurfaceRepresentation()
            self.log(f"Done: the Liver segment is in '{node.GetName()}'" + (f"; {result.message}." if result.message else "."))
            self._showQuality(result, self._segmentedVolume)
        elif result.status is JobStatus.CANCELLED:
            self.log("Cancelled; nothing was changed.")
        else:
            self.log(f"Failed: {result.message}")
            slicer.util.errorDisplay(result.message, windowTitle="Liver segmentation failed")
        for warning in result.warnings:
            self.log(f"Warning: {warning}")
        self.updateFromParameters()

    def onRestore(self) -> None:
        params = self.parameters()
        if params is not None and self.logic.restorePreviousLiver(params.outputSegmentation):
            self.log("The previous Liver segment was restored.")
        self.updateFromParameters()

    def onImportModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, "Import a LiverUNet model", "", "LiverUNet model (*.pt)")
        if not path:
            return
        try:
            imported = self.logic.modelLibrary.importModel(Path(path))
        except LiverUNetError as error:
            slicer.util.errorDisplay(str(error), windowTitle="Import failed")
            return
        self.refreshModels(select=imported)
        self.log(f"Imported {imported.name}.")

    def onExportModel(self) -> None:
        entry = self.selectedModel()
        if entry is None:
            return
        path = qt.QFileDialog.getSaveFileName(None, "Export the model", f"{entry.name}.pt", "LiverUNet model (*.pt)")
        if not path:
            return
        try:
            written = self.logic.modelLibrary.exportModel(entry, Path(path))
        except (LiverUNetError, OSError) as error:
            slicer.util.errorDisplay(str(error), windowTitle="Export failed")
            return
        self.log(f"Exported to {written}.")

    # --- helpers --------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def _setRunning(self, running: bool) -> None:
        self.ui.segmentButton.text = CANCEL_TEXT if running else SEGMENT_TEXT
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        for widget in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector, self.ui.modelComboBox,
                       self.ui.deviceComboBox, self.ui.ttaCheckBox, self.ui.restoreButton):
            widget.enabled = not running
        self.updateFromParameters()
