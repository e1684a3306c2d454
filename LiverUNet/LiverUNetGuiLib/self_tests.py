"""The checks behind ``LiverUNetTest`` (run only inside the Slicer application).

Each check takes the running ``ScriptedLoadableModuleTest`` (for ``delayDisplay`` and asserts),
builds its data with ``slicer.util.addVolumeFromArray`` (no downloads) and expects a cleared scene.
Nothing here imports ``LiverUNet.py`` (which imports this module): the widget is the module's own
(``slicer.modules.liverunet.widgetRepresentation().self()``) and the logic comes from LiverUNetSlicerLib.
The effect's checks are in ``self_tests_effect.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

import qt

import slicer
from LiverUNetLib.errors import LiverUNetError
from LiverUNetSlicerLib import LiverUNetLogic, TrainingCaseNodes

MISSING_WORKER = ["/nonexistent-liverunet/PythonSlicer"]  # a worker that cannot start


def obliqueMatrix() -> np.ndarray:
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    matrix = np.eye(4)
    matrix[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.8, 0.9, 2.5])
    matrix[:3, 3] = (-40, 25, -60)
    return matrix


def blob(shape=(16, 48, 48)) -> tuple[np.ndarray, np.ndarray]:
    k, j, i = np.indices(shape)
    centre = np.array(shape) / 2.0
    radii = np.array(shape) * np.array([0.35, 0.3, 0.3])
    mask = ((k - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 + ((i - centre[2]) / radii[2]) ** 2 <= 1
    rng = np.random.default_rng(0)
    return (rng.normal(100, 10, shape) + 300 * mask).astype(np.int16), mask


def waitUntil(condition: Callable[[], bool], timeoutSeconds: float) -> bool:
    """Run Qt's event loop, so the jobs' QTimer callbacks run, until ``condition()`` holds or time is up."""
    if condition():
        return True
    loop, poll, deadline = qt.QEventLoop(), qt.QTimer(), qt.QTimer()
    poll.timeout.connect(lambda: loop.quit() if condition() else None)
    deadline.setSingleShot(True)
    deadline.timeout.connect(loop.quit)
    poll.start(100)
    deadline.start(int(timeoutSeconds * 1000))
    (getattr(loop, "exec_", None) or loop.exec)()
    poll.stop()
    deadline.stop()
    return condition()


@contextlib.contextmanager
def capturedErrors() -> Iterator[list[str]]:
    """Error dialogs recorded instead of shown (outside testing mode they would wait for a click)."""
    messages: list[str] = []
    original = slicer.util.errorDisplay
    slicer.util.errorDisplay = lambda text, *args, **kwargs: messages.append(str(text))
    try:
        yield messages
    finally:
        slicer.util.errorDisplay = original


def paintedCase(shape=(16, 48, 48), slices=(5, 8, 11)):
    """A volume and a segmentation whose segment "liver" is painted on ``slices`` only."""
    image, mask = blob(shape)
    volume = slicer.util.addVolumeFromArray(image, obliqueMatrix(), "patient")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    painted = np.zeros_like(mask)
    painted[list(slices)] = mask[list(slices)]
    segmentId = segmentation.GetSegmentation().AddEmptySegment("liver", "liver")
    slicer.util.updateSegmentBinaryLabelmapFromArray(painted.astype(np.uint8), segmentation, segmentId, volume)
    return volume, segmentation, segmentId


TINY_SETTINGS = {"epochs": 2, "base_channels": 4, "depth": 2, "samples_per_epoch": 16, "batch_size": 4,
                 "crop_size": 48, "in_plane_spacing_mm": None, "validation_fraction": 0.0, "device": "cpu",
                 "mixed_precision": False}


def trainTinyModel(folder: Path, volume, segmentation, segmentId: str) -> Path:
    from LiverUNetSlicerLib.models import ModelLibrary

    logic = LiverUNetLogic(modelLibrary=ModelLibrary(folder))
    return logic.train([TrainingCaseNodes(volume, segmentation, segmentId)], folder / "tiny.pt", TINY_SETTINGS,
                       timeoutSeconds=600)


def checkVolumeGeometry(test) -> None:
    from LiverUNetSlicerLib.nodes import volumeFromNode

    test.delayDisplay("Volume node to array and geometry")
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    node = slicer.util.addVolumeFromArray(array, obliqueMatrix(), "oblique")
    volume = volumeFromNode(node)
    test.assertEqual(volume.array.shape, (4, 5, 6))
    test.assertTrue(np.array_equal(volume.array, array))
    test.assertTrue(np.allclose(volume.ijk_to_ras, obliqueMatrix(), atol=1e-6))


def checkLiverSegment(test) -> None:
    from LiverUNetSlicerLib.liver_segment import LIVER_TERMINOLOGY, newSegmentationNode, restoreSegment, writeLiverMask

    test.delayDisplay("Liver segment: name, colour, terminology, restore")
    image, mask = blob((8, 20, 24))
    volume = slicer.util.addVolumeFromArray(image, obliqueMatrix(), "patient")
    segmentation = newSegmentationNode(volume)
    writeLiverMask(segmentation, volume, mask)
    segment = segmentation.GetSegmentation().GetSegment("Liver")
    test.assertEqual(segment.GetName(), "Liver")
    test.assertTrue(np.allclose(segment.GetColor(), (221 / 255, 130 / 255, 101 / 255)))
    test.assertEqual(segment.GetTerminology(), LIVER_TERMINOLOGY)
    result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "Liver", volume) > 0
    test.assertTrue(np.array_equal(result, mask))
    backup = writeLiverMask(segmentation, volume, np.zeros_like(mask))
    restoreSegment(backup)
    restored = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "Liver", volume) > 0
    test.assertTrue(np.array_equal(restored, mask))


def checkPaintedSlicesAndBadInput(test) -> None:
    from LiverUNetSlicerLib.nodes import volumeFromNode
    from LiverUNetSlicerLib.painted import paintedSlices

    test.delayDisplay("Painted slices and bad input")
    image, mask = blob((10, 20, 24))
    volume = slicer.util.addVolumeFromArray(image, obliqueMatrix(), "patient")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    sparse = np.zeros_like(mask)
    sparse[[3, 6]] = mask[[3, 6]]
    segmentId = segmentation.GetSegmentation().AddEmptySegment("liver", "liver")
    slicer.util.updateSegmentBinaryLabelmapFromArray(sparse.astype(np.uint8), segmentation, segmentId, volume)
    test.assertEqual(paintedSlices(volume, segmentation, segmentId).indices, (3, 6))
    rgb = slicer.util.addVolumeFromArray(np.zeros((4, 5, 6, 3), np.uint8), None, "rgb", "vtkMRMLVectorVolumeNode")
    for node in (None, rgb):
        with test.assertRaises(LiverUNetError):
            volumeFromNode(node)


def moduleWidget():
    """The module's own widget, as Slicer built it (with a parent)."""
    return slicer.modules.liverunet.widgetRepresentation().self()


def checkWidget(test) -> None:
    test.delayDisplay("Widget and parameter node")
    widget = moduleWidget()
    widget.initializeParameterNode()  # setUp cleared the scene
    image, _ = blob((6, 10, 12))
    volume = slicer.util.addVolumeFromArray(image, None, "patient")
    widget._parameterNode.inputVolume = volume
    test.assertIs(widget.ui.inputVolumeSelector.currentNode(), volume)
    test.assertTrue(widget.ui.segmentButton.enabled)
    test.assertEqual(widget.ui.epochsSpinBox.text, "automatic")  # 0: the library's schedule (train_schedule.py)
    test.assertIsNone(widget._parameterNode.trainConfig()["epochs"])
    widget.ui.epochsSpinBox.value = 7
    test.assertEqual(widget._parameterNode.training.epochs, 7)
    test.assertEqual(widget._parameterNode.trainConfig()["epochs"], 7)
    widget.ui.networksPerFoldSpinBox.value = 2
    test.assertEqual(widget._parameterNode.trainConfig()["networks_per_fold"], 2)
    test.assertIsNone(widget._parameterNode.trainConfig()["modality"])  # Automatic: read from the images
    widget.ui.modalityComboBox.currentIndex = widget.ui.modalityComboBox.findText("CT")
    test.assertEqual(widget._parameterNode.trainConfig()["modality"], "ct")
    from LiverUNetSlicerLib.models import shippedModelPaths

    if shippedModelPaths():  # the automatic entry is selected: the note names the shipped weights' licences
        test.assertIn("CC BY", widget.ui.modelLicenceLabel.text)

    test.delayDisplay("A widget built without a parent keeps what setup() made")
    standalone = type(widget)()
    try:
        test.assertIsNotNone(standalone.logic)
        test.assertIsNotNone(standalone._parameterNode)
        test.assertTrue(standalone.Observations, "setup()'s observers were forgotten")
    finally:
        standalone.cleanup()
        standalone.parent.deleteLater()
    test.assertEqual(standalone.Observations, [])


def checkPanelsAfterFailedStart(test) -> None:
    """Segment and Train with a worker that cannot start: an error, buttons back to their names, no curves."""
    from LiverUNetSlicerLib.warm_worker import WarmWorker

    if importlib.util.find_spec("torch") is None:
        test.delayDisplay("PyTorch is not installed: failed-start check skipped (it would offer to install)")
        return
    test.delayDisplay("Segment and Train when the worker cannot start")
    widget = moduleWidget()
    widget.initializeParameterNode()
    volume, segmentation, segmentId = paintedCase((8, 24, 28), (2, 5))
    params = widget._parameterNode
    params.inputVolume = volume
    logic, warm, command = widget.logic, widget.logic.warmWorker, widget.logic.workerCommand
    logic.warmWorker, logic.workerCommand = WarmWorker(MISSING_WORKER), MISSING_WORKER
    try:
        with capturedErrors() as errors:
            widget.segmentPanel.onSegmentOrCancel()
        test.assertFalse(widget.segmentPanel.running)
        test.assertEqual(widget.ui.segmentButton.text, "Segment liver")
        test.assertTrue(widget.ui.inputVolumeSelector.enabled)
        test.assertTrue(any("Could not start the worker process" in e for e in errors), errors)

        from LiverUNetGuiLib.parameters import TrainingCaseParameters

        params.trainingCases.append(TrainingCaseParameters(volume=volume, segmentation=segmentation, segmentId=segmentId))
        charts = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode")
        with capturedErrors() as errors:
            widget.trainPanel.onTrainOrCancel()
        test.assertFalse(widget.trainPanel.running)
        test.assertEqual(widget.ui.trainButton.text, "Train")
        test.assertTrue(widget.ui.addCaseButton.enabled)
        test.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode"), charts)
        test.assertTrue(any("Could not start the worker process" in e for e in errors), errors)
    finally:
        logic.warmWorker.shutdown()
        logic.warmWorker, logic.workerCommand = warm, command
        for _ in range(len(params.trainingCases)):
            del params.trainingCases[-1]


def checkEffectRegistered(test) -> None:
    test.delayDisplay("Segment Editor effect 'Liver U-Net'")
    image, _ = blob((6, 10, 12))
    volume = slicer.util.addVolumeFromArray(image, None, "patient")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentation.GetSegmentation().AddEmptySegment("Liver", "Liver")
    editor = slicer.qMRMLSegmentEditorWidget()
    editor.setMRMLScene(slicer.mrmlScene)
    editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.setMRMLSegmentEditorNode(editorNode)
    editor.setSegmentationNode(segmentation)
    editor.setSourceVolumeNode(volume)
    editor.setActiveEffectByName("Liver U-Net")
    effect = editor.activeEffect()
    test.assertIsNotNone(effect, "the 'Liver U-Net' effect is not registered")
    test.assertEqual(effect.name, "Liver U-Net")
    editor.setActiveEffect(None)
    editor.deleteLater()


def checkTrainAndSegment(test) -> None:
    """Train a tiny model on painted slices, segment with it, and restore (needs torch)."""
    if importlib.util.find_spec("torch") is None:
        test.delayDisplay("PyTorch is not installed: training/segmentation check skipped")
        return
    from LiverUNetSlicerLib.models import ModelLibrary

    test.delayDisplay("Tiny training run and segmentation (a minute on CPU)")
    volume, segmentation, segmentId = paintedCase()
    with tempfile.TemporaryDirectory() as folder:
        model = trainTinyModel(Path(folder), volume, segmentation, segmentId)
        test.assertTrue(model.is_file())
        logic = LiverUNetLogic(modelLibrary=ModelLibrary(Path(folder)))
        result = logic.segmentLiver(volume, None, model, "cpu", timeoutSeconds=600)
        liverId = result.GetSegmentation().GetSegmentIdBySegmentName("Liver")
        test.assertTrue(liverId != "")
        test.assertTrue(logic.restorePreviousLiver(result))
        test.assertIsNone(result.GetSegmentation().GetSegment(liverId))
        checkWarmWorker(test, volume, model)


def checkWarmWorker(test, volume, model: Path) -> None:
    """The GUI's warm worker (a PythonSlicer --serve process) answers two clicks from one process."""
    environment = slicer.util.startupEnvironment() if hasattr(slicer.util, "startupEnvironment") else None
    logic = LiverUNetLogic(workerEnvironment=environment, keepWorkerWarm=True)
    try:
        first = logic.segmentLiver(volume, None, model, "cpu", timeoutSeconds=600)
        pid = logic.warmWorker.pid
        test.assertIsNotNone(pid)
        second = logic.segmentLiver(volume, first, model, "cpu", timeoutSeconds=600)
        test.assertIs(second, first)
        test.assertEqual(logic.warmWorker.pid, pid)
    finally:
        logic.shutdownWorker()
