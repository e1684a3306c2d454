"""The slices to look at, on real MRML (slicer-core): the segment result's quality reaches the panel, its
least-sure slices and the slices to paint next become RAS positions, and a jump moves the slice views there.

The worker runs for real with the tiny phantom model (engine_helpers); the slice views are real
``vtkMRMLSliceNode`` objects in the scene, as Slicer's layout makes them.
"""

from __future__ import annotations

import numpy as np
import pytest

from cli_phantoms import phantom
from engine_helpers import trained_phantom_model
from slicer_harness import mrml, requires_slicer_core  # noqa: F401

pytestmark = requires_slicer_core


def _sliceViews(scene, orientations=("Axial", "Sagittal", "Coronal")):
    import slicer

    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)  # what Slicer's application logic does
    views = []
    for name, orientation in zip(("Red", "Yellow", "Green"), orientations):
        node = scene.AddNewNodeByClass("vtkMRMLSliceNode", name)
        node.SetLayoutName(name)
        assert node.SetOrientation(orientation)
        views.append(node)
    return views


def _oblique_volume_node():
    """A phantom with a rotated, shifted grid, so the slice centre's RAS is not a plain index."""
    from LiverUNetSlicerLib.nodes import addVolumeNode

    volume, _ = phantom(seed=2, oblique=True)
    return addVolumeNode(volume, "phantom"), volume


def test_slice_targets_are_slice_centres_in_world_ras(mrml):
    from LiverUNetSlicerLib.slice_suggestions import SliceTargets

    node, volume = _oblique_volume_node()
    targets = SliceTargets.onNode([5, 2], 0, node)
    k, j, i = volume.array.shape
    expected = volume.ijk_to_ras @ np.array([(i - 1) / 2, (j - 1) / 2, 5, 1.0])
    assert np.allclose(targets.rasOf(5), expected[:3])
    assert [targets.next(), targets.next(), targets.next()] == [5, 2, 5]  # cycles
    with pytest.raises(Exception, match="outside"):
        SliceTargets.onNode([k], 0, node)


def test_jump_moves_every_slice_view_through_the_slice(mrml):
    import slicer

    from LiverUNetSlicerLib.slice_suggestions import SliceTargets, jumpToNext

    node, _ = _oblique_volume_node()
    red, yellow, green = _sliceViews(slicer.mrmlScene)
    targets = SliceTargets.onNode([6], 0, node)
    assert jumpToNext(targets, slicer.mrmlScene) == 6
    ras = targets.rasOf(6)
    for view in (red, yellow, green):
        assert _distanceToPlane(view, ras) == pytest.approx(0.0, abs=1e-3), view.GetName()
    assert red.GetSliceOffset() == pytest.approx(ras[2], abs=1e-3)  # axial: the offset is S


def _distanceToPlane(view, ras) -> float:
    """Distance of ``ras`` from the view's slice plane (SliceToRAS: column 2 the normal, column 3 a point)."""
    matrix = view.GetSliceToRAS()
    normal = np.array([matrix.GetElement(r, 2) for r in range(3)])
    origin = np.array([matrix.GetElement(r, 3) for r in range(3)])
    return float(np.dot(np.asarray(ras) - origin, normal / np.linalg.norm(normal)))


def test_paint_targets_are_never_painted_and_follow_the_shipped_rule(mrml):
    from LiverUNetSlicerLib.slice_suggestions import paintTargets, paintText

    _, volume = _oblique_volume_node()
    uncertainty = [0.0] * volume.array.shape[0]
    uncertainty[1] = 50.0  # a painted slice: never suggested, whatever its uncertainty
    uncertainty[7] = 40.0
    afterFill = paintTargets(volume, [1, 4], uncertainty, count=2)
    assert afterFill.slices == [7]  # least sure; nothing else is unsure
    assert paintText(afterFill, afterFill=True) == "Least sure after the fill: slice 7. Check it, paint it and fill again."
    whilePainting = paintTargets(volume, [1, 4], count=2)  # no fill yet: the largest gaps
    assert whilePainting.slices == [2, 3] and paintText(whilePainting, afterFill=False) == "Paint next: slices 2, 3."
    assert "at least two slices" in paintText(paintTargets(volume, [3]), afterFill=False)


def test_segment_result_carries_its_quality_to_the_panel(mrml, tmp_path):
    import slicer

    from LiverUNetSlicerLib import BlockingScheduler, JobStatus, LiverUNetLogic, ModelLibrary
    from LiverUNetSlicerLib.slice_suggestions import SliceTargets, jumpToNext, qualityOf, qualityText

    model, _ = trained_phantom_model(tmp_path)
    node, _ = _oblique_volume_node()
    red, *_ = _sliceViews(slicer.mrmlScene)
    logic = LiverUNetLogic(modelLibrary=ModelLibrary(tmp_path / "models"), tempRoot=tmp_path / "tmp")
    scheduler, results = BlockingScheduler(), []
    logic.segmentLiverAsync(node, None, model, "cpu", onFinished=results.append, scheduler=scheduler)
    scheduler.runUntilIdle(300)
    assert results[0].status is JobStatus.SUCCEEDED, results[0].message
    quality = qualityOf({"quality": results[0].quality})
    assert quality is not None and 0.0 <= quality.estimated_dice_low <= quality.estimated_dice <= 1.0
    assert quality.slice_axis == 0 and quality.least_sure_slices
    assert qualityText(quality).startswith("Estimated Dice ")
    targets = SliceTargets.onNode(quality.least_sure_slices, quality.slice_axis, node)
    first = jumpToNext(targets, slicer.mrmlScene)
    assert _distanceToPlane(red, targets.rasOf(first)) == pytest.approx(0.0, abs=1e-3)
