"""The "Train from painted segments" section: cases, settings, Train/Cancel, curves, ETA."""

from __future__ import annotations

from typing import Callable, Optional

import qt

import slicer
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.progress import ProgressEvent
from LiverUNetSlicerLib.case_table import PaintedSlicesCache, caseRows
from LiverUNetSlicerLib.logic import JobResult, LiverUNetLogic, TrainingCaseNodes
from LiverUNetLib.shipped_models import SHIPPED_START
from LiverUNetSlicerLib.models import shippedModelPaths
from LiverUNetSlicerLib.options import StartFrom
from LiverUNetSlicerLib.painted import paintedSlices
from LiverUNetSlicerLib.run_state import JobRunState
from LiverUNetSlicerLib.training_curves import TrainingCurves
from LiverUNetSlicerLib.worker_runner import JobStatus

from .parameters import LiverUNetParameterNode, TrainingCaseParameters
from .torch_setup import ensureTorch

TRAIN_TEXT = "Train"
CANCEL_TEXT = "Cancel training"
HEADERS = ["Volume", "Segmentation", "Segment", "Painted slices"]


def formatSeconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


class TrainPanel:
    def __init__(self, ui, logic: LiverUNetLogic, parameters: Callable[[], Optional[LiverUNetParameterNode]],
                 onModelTrained: Callable[[object], None]) -> None:
        self.ui = ui
        self.logic = logic
        self.parameters = parameters
        self.onModelTrained = onModelTrained
        self.run = JobRunState(self._setRunning)
        self.curves: Optional[TrainingCurves] = None
        self.paintedCache = PaintedSlicesCache()  # the table is refreshed on every parameter change
        ui.casesTable.setHorizontalHeaderLabels(HEADERS)
        ui.casesTable.horizontalHeader().setStretchLastSection(True)
        ui.addCaseButton.clicked.connect(self.onAddCase)
        ui.removeCaseButton.clicked.connect(self.onRemoveCase)
        ui.trainButton.clicked.connect(self.onTrainOrCancel)
        ui.showCurvesButton.clicked.connect(self.onShowCurves)

    @property
    def running(self) -> bool:
        return self.run.running

    def updateFromParameters(self) -> None:
        params = self.parameters()
        cases = list(params.trainingCases) if params is not None else []
        self.ui.trainButton.enabled = self.running or bool(cases)
        self.ui.removeCaseButton.enabled = bool(cases) and not self.running
        self._fillTable(cases)

    def _fillTable(self, cases: list) -> None:
        table = self.ui.casesTable
        rows = caseRows([(c.volume, c.segmentation, c.segmentId) for c in cases], self.paintedCache)
        table.setRowCount(len(rows))
        for row, texts in enumerate(rows):
            for column, text in enumerate(texts):
                item = qt.QTableWidgetItem(text)
                item.setToolTip(text)
                table.setItem(row, column, item)

    # --- slots ----------------------------------------------------------------------------------
    def onAddCase(self) -> None:
        params = self.parameters()
        volume = self.ui.caseVolumeSelector.currentNode()
        segmentation = self.ui.caseSegmentSelector.currentNode()
        segmentId = self.ui.caseSegmentSelector.currentSegmentID()
        if params is None or volume is None or segmentation is None or not segmentId:
            slicer.util.errorDisplay("Choose a volume, its segmentation and the painted segment first.")
            return
        try:
            info = paintedSlices(volume, segmentation, segmentId)
        except LiverUNetError as error:
            slicer.util.errorDisplay(str(error), windowTitle="Cannot use this case")
            return
        if info.count == 0:
            slicer.util.errorDisplay("That segment has no painted slice. Outline the liver on a few slices first.")
            return
        params.trainingCases.append(TrainingCaseParameters(volume=volume, segmentation=segmentation, segmentId=segmentId))
        self.updateFromParameters()

    def onRemoveCase(self) -> None:
        params = self.parameters()
        rows = sorted({index.row() for index in self.ui.casesTable.selectedIndexes()}, reverse=True)
        if params is None:
            return
        for row in rows or [len(params.trainingCases) - 1]:
            if 0 <= row < len(params.trainingCases):
                del params.trainingCases[row]
        self.updateFromParameters()

    def onTrainOrCancel(self) -> None:
        if self.running:
            self.ui.trainStatusLabel.text = "Cancelling; the previous model stays selected..."
            self.run.cancel()
            return
        params = self.parameters()
        if params is None or not ensureTorch():
            return
        cases = [TrainingCaseNodes(c.volume, c.segmentation, c.segmentId) for c in params.trainingCases
                 if c.volume is not None and c.segmentation is not None]
        init = None
        if params.training.startFrom is StartFrom.SELECTED_MODEL:
            init = params.modelPath if params.modelPath is not None else (SHIPPED_START if shippedModelPaths() else None)
        output = self.logic.modelLibrary.newModelPath(params.training.modelName)
        self.ui.trainStatusLabel.text = f"Training on {len(cases)} case(s)..."
        try:
            self.run.start(lambda finished: self.logic.trainAsync(
                cases, output, params.trainConfig(), init, params.device,
                onProgress=self.onProgress, onFinished=finished), self.onFinished)
        except LiverUNetError as error:
            self.ui.trainStatusLabel.text = "Training did not start."
            slicer.util.errorDisplay(str(error), windowTitle="Cannot train")
            return
        if self.running:  # progress arrives from the timer, after this: the curves get every epoch
            self.curves = TrainingCurves(slicer.mrmlScene, f"Training {output.stem}")
            self.ui.showCurvesButton.enabled = True
            self.onShowCurves()

    def onProgress(self, event: ProgressEvent) -> None:
        if self.curves is not None:
            self.curves.add(event)
        if event.fraction is not None:
            self.ui.trainProgressBar.value = int(round(100 * event.fraction))
        parts = [event.stage.value]
        if event.epoch is not None and event.epochs:
            parts.append(f"epoch {event.epoch}/{event.epochs}")
        if event.fold is not None and event.folds and event.folds > 1:
            parts.append(f"network {event.fold}/{event.folds}")  # folds x networks per fold, counted from 1
        if event.validation_dice is not None:
            parts.append(f"validation Dice {event.validation_dice:.3f}")
        if event.eta_seconds is not None:
            parts.append(f"about {formatSeconds(event.eta_seconds)} left")
        self.ui.trainStatusLabel.text = ", ".join(parts)

    def onFinished(self, result: JobResult) -> None:
        if self.curves is not None and self.curves.rowCount() == 0:  # ended before its first epoch
            self.curves.remove()
            self.curves = None
            self.ui.showCurvesButton.enabled = False
        if result.status is JobStatus.SUCCEEDED:
            self.ui.trainStatusLabel.text = f"Saved {result.value.name}; it is now the selected model."
            self.onModelTrained(result.value)
        elif result.status is JobStatus.CANCELLED:
            self.ui.trainStatusLabel.text = "Training cancelled; the previous model is still selected."
        else:
            self.ui.trainStatusLabel.text = "Training failed."
            slicer.util.errorDisplay(result.message, windowTitle="Training failed")
        self.updateFromParameters()

    def onShowCurves(self) -> None:
        if self.curves is not None:
            slicer.modules.plots.logic().ShowChartInLayout(self.curves.chartNode)

    def _setRunning(self, running: bool) -> None:
        self.ui.trainButton.text = CANCEL_TEXT if running else TRAIN_TEXT
        self.ui.trainProgressBar.visible = running
        self.ui.trainProgressBar.value = 0
        self.ui.showCurvesButton.enabled = self.curves is not None
        for widget in (self.ui.addCaseButton, self.ui.removeCaseButton, self.ui.epochsSpinBox, self.ui.foldsSpinBox,
                       self.ui.networksPerFoldSpinBox, self.ui.augmentationSlider,
                       self.ui.liverFreeBeyondPaintingCheckBox, self.ui.modalityComboBox, self.ui.startFromComboBox,
                       self.ui.modelNameLineEdit):
            widget.enabled = not running
