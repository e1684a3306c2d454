"""The self-test of the Segment Editor effect's Apply, through Slicer's real editor and Qt timers.

Apply is pressed as a user would (the effect's ``onApply``), and the checks wait in Qt's event loop while
the job's ``QTimer`` callbacks run: a segmentation that succeeds, a stored model path that no longer exists,
a worker that cannot start, and a fill cancelled by pressing Apply (then "Cancel") again. Each case checks
the button, the status line, the error shown and the segment.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np

import slicer

from .self_tests import MISSING_WORKER, capturedErrors, paintedCase, trainTinyModel, waitUntil

MODE, MODEL, DEVICE, EPOCHS = "LiverUNet.Mode", "LiverUNet.ModelPath", "LiverUNet.Device", "LiverUNet.FillEpochs"


def editorWithEffect(volume, segmentation, segmentId):
    """A Segment Editor on the case with the "Liver U-Net" effect active: (editor, C++ effect, Python effect)."""
    editor = slicer.qMRMLSegmentEditorWidget()
    editor.setMRMLScene(slicer.mrmlScene)
    editor.setMRMLSegmentEditorNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
    editor.setSegmentationNode(segmentation)
    editor.setSourceVolumeNode(volume)
    editor.setCurrentSegmentID(segmentId)
    editor.setActiveEffectByName("Liver U-Net")
    effect = editor.activeEffect()
    return editor, effect, effect.self()


def segmentArray(volume, segmentation, segmentId) -> np.ndarray:
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume) > 0


def apply(effect, effectSelf, mode: str, model: str, epochs: int = 2) -> list[str]:
    """Set the effect's parameters as its options would, press Apply; the error dialogs it showed."""
    for name, value in ((MODE, mode), (MODEL, model), (DEVICE, "cpu"), (EPOCHS, epochs)):
        effect.setParameter(name, str(value))
    effectSelf.updateGUIFromMRML()
    with capturedErrors() as errors:
        effectSelf.onApply()
    return errors


def checkEffectApply(test) -> None:
    if importlib.util.find_spec("torch") is None:
        test.delayDisplay("PyTorch is not installed: the effect's Apply check is skipped")
        return
    test.delayDisplay("Effect Apply: success, stale model, failed start, cancel (a few minutes on CPU)")
    volume, segmentation, segmentId = paintedCase()
    with tempfile.TemporaryDirectory() as folder:
        model = trainTinyModel(Path(folder), volume, segmentation, segmentId)
        editor, effect, effectSelf = editorWithEffect(volume, segmentation, segmentId)
        try:
            checkSuccess(test, effect, effectSelf, volume, segmentation, segmentId, model)
            checkStaleModel(test, effect, effectSelf, volume, segmentation, segmentId, Path(folder) / "deleted.pt")
            checkFailedStart(test, effect, effectSelf, volume, segmentation, segmentId, model)
            checkCancel(test, effect, effectSelf, volume, segmentation, segmentId, model)
        finally:
            effectSelf.cleanup()
            editor.setActiveEffect(None)
            editor.deleteLater()


def checkSuccess(test, effect, effectSelf, volume, segmentation, segmentId, model: Path) -> None:
    test.delayDisplay("Effect Apply: segment the whole volume")
    errors = apply(effect, effectSelf, "segment", str(model))
    test.assertEqual(errors, [])
    test.assertTrue(effectSelf.run.running)
    test.assertEqual(effectSelf.applyButton.text, "Cancel")
    test.assertTrue(waitUntil(lambda: not effectSelf.run.running, 600), "the job did not finish")
    test.assertEqual(effectSelf.applyButton.text, "Apply")
    test.assertTrue(effectSelf.statusLabel.text.startswith("Done"), effectSelf.statusLabel.text)
    test.assertTrue(segmentArray(volume, segmentation, segmentId).any())


def checkStaleModel(test, effect, effectSelf, volume, segmentation, segmentId, missing: Path) -> None:
    test.delayDisplay("Effect Apply: a stored model path that no longer exists")
    before = segmentArray(volume, segmentation, segmentId)
    errors = apply(effect, effectSelf, "segment", str(missing))
    test.assertEqual(effectSelf.modelComboBox.currentText, f"Missing: {missing.name}")
    test.assertTrue(any("Model file not found" in e for e in errors), errors)
    test.assertFalse(effectSelf.run.running)
    test.assertEqual(effectSelf.applyButton.text, "Apply")
    test.assertTrue(effectSelf.modeComboBox.enabled)
    test.assertTrue(np.array_equal(segmentArray(volume, segmentation, segmentId), before))


def checkFailedStart(test, effect, effectSelf, volume, segmentation, segmentId, model: Path) -> None:
    test.delayDisplay("Effect Apply: the worker cannot start")
    before = segmentArray(volume, segmentation, segmentId)
    if effectSelf.warmWorker is not None:
        effectSelf.warmWorker.shutdown()
    effectSelf.warmWorker, effectSelf.workerCommand = None, MISSING_WORKER
    try:
        errors = apply(effect, effectSelf, "segment", str(model))
    finally:
        if effectSelf.warmWorker is not None:
            effectSelf.warmWorker.shutdown()
        effectSelf.warmWorker, effectSelf.workerCommand = None, None
    test.assertTrue(any("Could not start the worker process" in e for e in errors), errors)
    test.assertFalse(effectSelf.run.running)
    test.assertEqual(effectSelf.applyButton.text, "Apply")
    test.assertTrue(effectSelf.statusLabel.text.startswith("Failed"), effectSelf.statusLabel.text)
    test.assertTrue(np.array_equal(segmentArray(volume, segmentation, segmentId), before))


def checkCancel(test, effect, effectSelf, volume, segmentation, segmentId, model: Path) -> None:
    test.delayDisplay("Effect Apply: fill from painted slices, cancelled")
    before = segmentArray(volume, segmentation, segmentId)
    errors = apply(effect, effectSelf, "fill", str(model), epochs=200)
    test.assertEqual(errors, [])
    test.assertTrue(effectSelf.run.running)
    with capturedErrors() as cancelErrors:
        effectSelf.onApply()  # the button reads "Cancel" now
    test.assertTrue(waitUntil(lambda: not effectSelf.run.running, 120), "the cancelled job did not end")
    test.assertEqual(cancelErrors, [])
    test.assertEqual(effectSelf.statusLabel.text, "Cancelled; the segment is unchanged.")
    test.assertEqual(effectSelf.applyButton.text, "Apply")
    test.assertTrue(np.array_equal(segmentArray(volume, segmentation, segmentId), before))
