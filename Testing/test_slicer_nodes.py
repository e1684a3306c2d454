"""Volume node <-> Volume on real MRML (slicer-core): KJI order, oblique geometry, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import vtk

from slicer_harness import addVolume, mrml, obliqueIjkToRas, requires_slicer_core  # noqa: F401

pytestmark = requires_slicer_core


def test_volume_from_node_keeps_kji_voxels_and_oblique_geometry(mrml):
    import slicer
    from LiverUNetSlicerLib.nodes import volumeFromNode

    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    matrix = obliqueIjkToRas()
    node = addVolume(array, matrix, "oblique")
    assert node.GetSpacing() == pytest.approx((0.8, 0.9, 2.5))
    volume = volumeFromNode(node)
    assert volume.array.shape == (5, 6, 7)  # K, J, I
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.ijk_to_ras, matrix, atol=1e-9)
    # voxel IJK (i, j, k) = array[k, j, i] sits where Slicer's own matrix puts it
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    ras = m.MultiplyPoint((6, 2, 4, 1))[:3]
    np.testing.assert_allclose(volume.ijk_to_ras @ [6, 2, 4, 1], list(ras) + [1.0], atol=1e-9)
    assert volume.array[4, 2, 6] == slicer.util.arrayFromVolume(node)[4, 2, 6]
    # a copy, not a view: editing the node later cannot change a running job
    slicer.util.arrayFromVolume(node)[0, 0, 0] = 999
    assert volume.array[0, 0, 0] == 0


def test_round_trip_through_a_new_node(mrml):
    from LiverUNetLib.volume import Volume
    from LiverUNetSlicerLib.nodes import addVolumeNode, volumeFromNode

    volume = Volume(np.random.default_rng(1).integers(0, 500, (4, 5, 6)).astype(np.int64), obliqueIjkToRas())
    node = addVolumeNode(volume, "roundtrip")  # int64 is narrowed: Slicer rejects it
    back = volumeFromNode(node)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=1e-9)


def test_linear_parent_transform_is_folded_into_world_geometry(mrml):
    import slicer
    from LiverUNetSlicerLib.nodes import arrayToMatrix, volumeFromNode

    node = addVolume(np.zeros((3, 4, 5), np.int16), obliqueIjkToRas(), "moved")
    shift = np.eye(4)
    shift[:3, 3] = (10, -5, 3)
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    transform.SetMatrixTransformToParent(arrayToMatrix(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(volumeFromNode(node).ijk_to_ras, shift @ obliqueIjkToRas(), atol=1e-9)


def test_non_linear_transform_is_refused(mrml):
    import slicer
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.nodes import volumeFromNode

    node = addVolume(np.zeros((3, 4, 5), np.int16), name="warped")
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    tps = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for p, q in (((0, 0, 0), (1, 0, 0)), ((10, 0, 0), (10, 1, 0)), ((0, 10, 0), (0, 10, 2)), ((0, 0, 10), (1, 1, 10))):
        source.InsertNextPoint(p)
        target.InsertNextPoint(q)
    tps.SetSourceLandmarks(source)
    tps.SetTargetLandmarks(target)
    transform.SetAndObserveTransformToParent(tps)
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(LiverUNetError, match="non-linear transform 'warp'.*Harden"):
        volumeFromNode(node)


@pytest.mark.parametrize("case", ["none", "rgb", "vector4d", "labelmap", "single_slice", "not_a_volume"])
def test_bad_input_volumes_give_clear_messages(mrml, case):
    import slicer
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.nodes import volumeFromNode

    expected = {
        "none": "No input volume is selected",
        "rgb": "RGB, vector or 4D",
        "vector4d": "RGB, vector or 4D",
        "labelmap": "is a label map",
        "single_slice": "2D image",
        "not_a_volume": "is not a volume",
    }[case]
    if case == "none":
        node = None
    elif case in ("rgb", "vector4d"):
        components = 3 if case == "rgb" else 6
        node = slicer.util.addVolumeFromArray(np.zeros((4, 5, 6, components), np.uint8), None, case,
                                              "vtkMRMLVectorVolumeNode")
    elif case == "labelmap":
        node = slicer.util.addVolumeFromArray(np.zeros((4, 5, 6), np.uint8), None, case, "vtkMRMLLabelMapVolumeNode")
    elif case == "single_slice":
        node = addVolume(np.zeros((1, 5, 6), np.int16), name=case)
    else:
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", case)
    with pytest.raises(LiverUNetError, match=expected):
        volumeFromNode(node)
