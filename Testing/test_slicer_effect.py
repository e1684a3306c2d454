"""The effect's labelmap path through Slicer's real vtkSlicerSegmentEditorLogic (slicer-core).

The worker is replaced by a fixed "prediction" here (the effect core is independent of how the mask
was computed); test_slicer_logic.py runs the whole effect job with the real worker.
"""

from __future__ import annotations

import numpy as np
import pytest

from slicer_effect_adapter import ScriptedEffectAdapter
from slicer_harness import (addSegmentation, addVolume, blobImage, mrml, obliqueIjkToRas,  # noqa: F401
                            paintSegment, requires_slicer_core, segmentArray)

pytestmark = requires_slicer_core


def _setup(shape=(10, 16, 20)):
    import slicer

    image, liver = blobImage(shape)
    volume = addVolume(image, obliqueIjkToRas(), "source")
    seg = addSegmentation(volume)
    liverId = seg.GetSegmentation().AddEmptySegment("liver", "Liver")
    effect = ScriptedEffectAdapter(slicer.mrmlScene, seg, volume, liverId)
    return image, liver, volume, seg, liverId, effect


def _modeSet():
    import slicer

    return slicer.vtkSlicerSegmentEditorLogic.ModificationModeSet


def test_snapshot_reads_the_source_on_the_reference_grid(mrml):
    from LiverUNetSlicerLib.effect_core import takeSnapshot

    image, _, volume, seg, liverId, effect = _setup()
    snapshot = takeSnapshot(effect, needPainted=False)
    np.testing.assert_allclose(snapshot.volume.array, image, atol=1e-3)  # same grid: no resampling
    np.testing.assert_allclose(snapshot.volume.ijk_to_ras, obliqueIjkToRas(), atol=1e-6)
    assert snapshot.segmentId == liverId and snapshot.painted is None


def test_apply_writes_the_selected_segment_with_undo(mrml):
    from LiverUNetSlicerLib.effect_core import applyMask, takeSnapshot

    _, liver, volume, seg, liverId, effect = _setup()
    snapshot = takeSnapshot(effect, needPainted=False)
    applyMask(effect, snapshot, liver, _modeSet())
    assert effect.calls == ["saveStateForUndo", "modifySelectedSegmentByLabelmap"]
    np.testing.assert_array_equal(segmentArray(seg, liverId, volume), liver)
    assert effect.logic.CanUndo()
    effect.logic.Undo()
    assert not segmentArray(seg, liverId, volume).any()


def test_masking_and_overwrite_rules_are_respected(mrml):
    import slicer
    from LiverUNetSlicerLib.effect_core import applyMask, takeSnapshot

    image, _, volume, seg, liverId, effect = _setup()
    kidney = np.zeros(image.shape, bool)
    kidney[:, :4, :] = True
    kidneyId = paintSegment(seg, volume, kidney, "kidney")
    editor = effect.parameterSetNode()
    editor.SetSelectedSegmentID(liverId)
    editor.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)  # other segments protected
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)
    editor.SetSourceVolumeIntensityMask(True)
    editor.SetSourceVolumeIntensityMaskRange(150, 10000)  # only the bright 'liver' voxels are editable
    snapshot = takeSnapshot(effect, needPainted=False)
    everything = np.ones(image.shape, bool)
    applyMask(effect, snapshot, everything, _modeSet())
    result = segmentArray(seg, liverId, volume)
    assert result.any()
    assert not (result & kidney).any(), "voxels of a protected segment were overwritten"
    assert not (result & (image < 150)).any(), "the intensity mask was ignored"
    np.testing.assert_array_equal(segmentArray(seg, kidneyId, volume), kidney)


def test_fill_from_painted_keeps_painted_slices_and_fills_the_rest(mrml):
    from LiverUNetSlicerLib.effect_core import applyMask, fillUnpainted, takeSnapshot

    image, liver, volume, seg, liverId, effect = _setup()
    painted = np.zeros_like(liver)
    painted[[3, 6]] = liver[[3, 6]]
    painted[3, :2, :2] = True  # a stroke the model would never predict: must survive as painted
    paintSegment(seg, volume, painted, liverId)
    snapshot = takeSnapshot(effect, needPainted=True)
    assert snapshot.painted is not None and list(snapshot.painted.annotated) == [3, 6]
    prediction = np.zeros_like(liver)
    prediction[2:8] = True  # a crude model output, also covering painted slice 6 wrongly
    filled = fillUnpainted(snapshot.painted, prediction)
    applyMask(effect, snapshot, filled, _modeSet())
    result = segmentArray(seg, liverId, volume)
    np.testing.assert_array_equal(result[[3, 6]], painted[[3, 6]])
    assert result[[2, 4, 5, 7]].all() and not result[[0, 1, 8, 9]].any()


def test_fill_needs_a_painted_slice(mrml):
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.effect_core import takeSnapshot

    *_, effect = _setup()
    with pytest.raises(LiverUNetError, match="has no painted slice"):
        takeSnapshot(effect, needPainted=True)


def test_result_is_not_written_after_the_selection_changed(mrml):
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.effect_core import applyMask, takeSnapshot

    _, liver, volume, seg, liverId, effect = _setup()
    snapshot = takeSnapshot(effect, needPainted=False)
    otherId = seg.GetSegmentation().AddEmptySegment("other", "other")
    effect.parameterSetNode().SetSelectedSegmentID(otherId)
    with pytest.raises(LiverUNetError, match="changed while the liver was computed"):
        applyMask(effect, snapshot, liver, _modeSet())
    assert effect.calls == []
    assert not segmentArray(seg, otherId, volume).any() and not segmentArray(seg, liverId, volume).any()


def test_result_is_not_written_after_the_geometry_changed(mrml):
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.effect_core import applyMask, takeSnapshot

    _, liver, volume, seg, liverId, effect = _setup()
    snapshot = takeSnapshot(effect, needPainted=False)
    coarse = addVolume(np.zeros((5, 8, 10), np.int16), np.diag([2.0, 2.0, 2.0, 1.0]), "coarse")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(coarse)
    with pytest.raises(LiverUNetError, match="geometry changed"):
        applyMask(effect, snapshot, liver, _modeSet())
    assert effect.calls == []


def test_missing_editor_inputs_give_clear_messages(mrml):
    import slicer
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.effect_core import takeSnapshot

    _, _, volume, seg, liverId, effect = _setup()
    effect.parameterSetNode().SetSelectedSegmentID("")
    with pytest.raises(LiverUNetError, match="Select the segment"):
        takeSnapshot(effect, needPainted=False)
    effect.parameterSetNode().SetSelectedSegmentID(liverId)
    rgb = slicer.util.addVolumeFromArray(np.zeros((10, 16, 20, 3), np.uint8), obliqueIjkToRas(), "rgb",
                                         "vtkMRMLVectorVolumeNode")
    effect.logic.SetSourceVolumeNode(rgb)
    with pytest.raises(LiverUNetError, match="RGB, vector or 4D"):
        takeSnapshot(effect, needPainted=False)
