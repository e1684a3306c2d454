"""Volume nodes <-> :class:`LiverUNetLib.volume.Volume`, with the checks that give clear messages.

A volume node holds voxels in KJI order (``arrayFromVolume``) and its geometry in
``GetIJKToRASMatrix``; a :class:`Volume` holds exactly the same two things, so no voxel is moved.
A linear parent transform is folded into the matrix (the model must see the true orientation);
a non-linear one is refused, since no single matrix describes the voxels' positions.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import vtk

import slicer
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.volume import Volume


def matrixToArray(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """A ``vtkMatrix4x4`` as a 4x4 float64 numpy array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def arrayToMatrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A 4x4 numpy array as a ``vtkMatrix4x4``."""
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def nodeName(node: Optional[slicer.vtkMRMLNode]) -> str:
    return node.GetName() if node is not None and node.GetName() else "(unnamed)"


def requireVolumeNode(volumeNode: Optional[slicer.vtkMRMLNode], what: str = "input volume") -> None:
    """Refuse a missing node, a non-volume, a label map, an RGB/vector/4D volume or an empty one."""
    if volumeNode is None:
        raise LiverUNetError(f"No {what} is selected. Choose a CT or MRI volume first.")
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        if volumeNode.IsA("vtkMRMLVolumeNode"):
            raise LiverUNetError(
                f"The {what} '{nodeName(volumeNode)}' is an RGB, vector or 4D (multi-volume) image "
                f"({volumeNode.GetClassName()}). Choose a single 3D grey-scale volume, or extract one "
                "frame or channel first (for example with the Vector to Scalar Volume module)."
            )
        raise LiverUNetError(f"'{nodeName(volumeNode)}' is not a volume ({volumeNode.GetClassName()}).")
    if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        raise LiverUNetError(
            f"The {what} '{nodeName(volumeNode)}' is a label map. Choose the CT or MRI image instead."
        )
    image = volumeNode.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise LiverUNetError(f"The {what} '{nodeName(volumeNode)}' holds no voxels.")
    if image.GetNumberOfScalarComponents() != 1:
        raise LiverUNetError(
            f"The {what} '{nodeName(volumeNode)}' has {image.GetNumberOfScalarComponents()} values per "
            "voxel (RGB, vector or 4D). Choose a single 3D grey-scale volume."
        )


def parentToWorldArray(node: slicer.vtkMRMLTransformableNode, what: str = "volume") -> np.ndarray:
    """The 4x4 node-to-world matrix of ``node``'s parent transforms; identity without one.

    Raises :class:`LiverUNetError` for a non-linear (warping) transform.
    """
    transformNode = node.GetParentTransformNode()
    if transformNode is None:
        return np.eye(4)
    if not transformNode.IsTransformToWorldLinear():
        raise LiverUNetError(
            f"The {what} '{nodeName(node)}' is under the non-linear transform "
            f"'{nodeName(transformNode)}'. Harden the transform on the {what} (Data module, right-click, "
            "'Harden transform') or remove it, then try again."
        )
    matrix = vtk.vtkMatrix4x4()
    transformNode.GetMatrixTransformToWorld(matrix)
    return matrixToArray(matrix)


def localIjkToRas(volumeNode: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """The node's own IJK-to-RAS matrix (ignoring parent transforms)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return matrixToArray(matrix)


def worldIjkToRas(volumeNode: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """IJK-to-world-RAS: the parent transform (linear only) times the node's IJK-to-RAS."""
    return parentToWorldArray(volumeNode) @ localIjkToRas(volumeNode)


def volumeFromNode(volumeNode: Optional[slicer.vtkMRMLNode], what: str = "input volume") -> Volume:
    """A validated copy of the node's voxels with its world geometry.

    The array is copied, so later edits of the node cannot change a job that is running.
    """
    requireVolumeNode(volumeNode, what)
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    volume = Volume(array, worldIjkToRas(volumeNode), {"name": nodeName(volumeNode)})
    volume.validate_scalar_3d(f"{what} '{nodeName(volumeNode)}'")
    return volume


def addVolumeNode(volume: Volume, name: str, labelmap: bool = False) -> slicer.vtkMRMLScalarVolumeNode:
    """Add a new volume node holding ``volume`` (int64 is narrowed, which Slicer cannot store)."""
    array = volume.array
    if array.dtype == np.int64:
        array = array.astype(np.int32)
    className = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    return slicer.util.addVolumeFromArray(array, volume.ijk_to_ras, name, className)


def sameMatrix(a: np.ndarray, b: np.ndarray, toleranceMm: float = 1e-3) -> bool:
    """True when two IJK-to-RAS matrices place every voxel within ``toleranceMm``."""
    return bool(np.allclose(a, b, atol=toleranceMm))
