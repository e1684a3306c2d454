"""Live training curves as MRML nodes: a table (epoch, loss, validation Dice) and a plot chart.

The chart can be shown in any plot view (``slicer.modules.plots.logic().ShowChartInLayout``) and is
saved with the scene. Updated from the worker's progress events on the main thread.
"""

from __future__ import annotations

import math
from typing import Optional

import vtk

import slicer
from LiverUNetLib.progress import ProgressEvent

COLUMNS = ("epoch", "loss", "validation Dice")


class TrainingCurves:
    def __init__(self, scene: slicer.vtkMRMLScene, name: str = "LiverUNet training") -> None:
        self.tableNode = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table")
        table = self.tableNode.GetTable()
        for column in COLUMNS:
            array = vtk.vtkDoubleArray()
            array.SetName(column)
            table.AddColumn(array)
        self.chartNode = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        self.chartNode.SetTitle(name)
        self.chartNode.SetXAxisTitle("epoch")
        self.chartNode.SetYAxisTitle("loss / Dice")
        for column, color in (("loss", (0.85, 0.37, 0.0)), ("validation Dice", (0.0, 0.45, 0.70))):
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column}")
            series.SetAndObserveTableNodeID(self.tableNode.GetID())
            series.SetXColumnName("epoch")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetColor(*color)
            self.chartNode.AddAndObservePlotSeriesNodeID(series.GetID())
        self.seriesNodes = [self.chartNode.GetNthPlotSeriesNode(i) for i in range(self.chartNode.GetNumberOfPlotSeriesNodes())]
        self._epochOffset = 0
        self._lastKey: Optional[tuple[int, int]] = None

    def remove(self) -> None:
        """Take the table, the chart and its series out of the scene (a job that ended before any epoch)."""
        for node in (self.chartNode, *self.seriesNodes, self.tableNode):
            scene = node.GetScene()
            if scene is not None:
                scene.RemoveNode(node)

    def add(self, event: ProgressEvent) -> bool:
        """Add one row per (fold, epoch) that reports a loss; folds are laid one after another."""
        if event.epoch is None or event.loss is None:
            return False
        fold = event.fold or 0
        key = (fold, event.epoch)
        if key == self._lastKey:
            return False
        if self._lastKey is not None and fold != self._lastKey[0]:
            self._epochOffset += self._lastKey[1]
        self._lastKey = key
        dice = event.validation_dice if event.validation_dice is not None else math.nan
        table = self.tableNode.GetTable()
        row = table.InsertNextBlankRow()
        for column, value in zip(COLUMNS, (self._epochOffset + event.epoch, event.loss, dice)):
            table.SetValue(row, table.GetColumnIndex(column), vtk.vtkVariant(float(value)))
        table.Modified()
        self.tableNode.Modified()
        return True

    def rowCount(self) -> int:
        return self.tableNode.GetTable().GetNumberOfRows()
