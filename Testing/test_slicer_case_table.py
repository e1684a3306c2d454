"""The training-case table counts each case's painted slices once per segment state (real MRML).

The panel refreshes the table on every parameter-node change; Slicer's line-edit connector writes the
parameter on each ``textChanged`` (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py, 5.10,
``QLineEditToStrConnector._connect``), so typing a model name must not export every segment again.
The count is watched through Slicer's own ``arrayFromSegmentBinaryLabelmap``, which it calls.
"""

from __future__ import annotations

import numpy as np

from slicer_harness import addSegmentation, addVolume, blobImage, mrml, paintSegment, requires_slicer_core  # noqa: F401

pytestmark = requires_slicer_core


def countedExports(monkeypatch) -> list[str]:
    import slicer

    real, calls = slicer.util.arrayFromSegmentBinaryLabelmap, []

    def counting(segmentationNode, segmentId, referenceVolumeNode=None):
        calls.append(segmentId)
        return real(segmentationNode, segmentId, referenceVolumeNode)

    monkeypatch.setattr(slicer.util, "arrayFromSegmentBinaryLabelmap", counting)
    return calls


def twoCases():
    image, liver = blobImage((10, 24, 28))
    cases = []
    for name in ("a", "b"):
        volume = addVolume(image, None, name)
        segmentation = addSegmentation(volume, f"{name} seg")
        painted = np.zeros_like(liver)
        painted[[2, 5]] = liver[[2, 5]]
        cases.append((volume, segmentation, paintSegment(segmentation, volume, painted, "liver")))
    return cases, liver


def test_rows_are_computed_once_until_a_segment_changes(mrml, monkeypatch):
    from LiverUNetSlicerLib.case_table import PaintedSlicesCache, caseRows
    from LiverUNetSlicerLib.parameter_node import moduleParameterNode

    cases, liver = twoCases()
    calls = countedExports(monkeypatch)
    cache = PaintedSlicesCache()
    rows = caseRows(cases, cache)
    assert rows == [("a", "a seg", "liver", "2 of 10 slices painted"), ("b", "b seg", "liver", "2 of 10 slices painted")]
    assert len(calls) == 2
    parameters = moduleParameterNode(mrml.scene)
    for text in ("m", "my", "my_model"):  # what typing into "New model name" does to the scene
        parameters.SetParameter("training.modelName", text)
        assert caseRows(cases, cache) == rows
    assert len(calls) == 2, "typing must not export the segments again"

    volume, segmentation, segmentId = cases[0]
    more = np.zeros_like(liver)
    more[[2, 5, 8]] = liver[[2, 5, 8]]
    paintSegment(segmentation, volume, more, segmentId)  # the user paints one more slice in case a
    rows = caseRows(cases, cache)
    assert rows[0][3] == "3 of 10 slices painted" and rows[1][3] == "2 of 10 slices painted"
    assert len(calls) == 3, "only the changed case is counted again"


def test_removed_nodes_and_segments_are_named_without_counting(mrml, monkeypatch):
    from LiverUNetSlicerLib.case_table import PaintedSlicesCache, caseRows

    cases, _ = twoCases()
    volume, segmentation, segmentId = cases[0]
    segmentation.GetSegmentation().RemoveSegment(segmentId)
    calls = countedExports(monkeypatch)
    rows = caseRows([(volume, segmentation, segmentId), (None, cases[1][1], cases[1][2])], PaintedSlicesCache())
    assert rows[0][2] == "(removed)" and rows[1][0] == "(removed)"
    assert all(row[3].startswith("problem:") for row in rows) and calls == []
