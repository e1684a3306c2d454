"""Real MRML for pytest: a scene plus the module logics that ``slicer.util`` needs, from slicer-core.

Follows ../shared/docs/slicer-api.md section 9. Nothing here fakes Slicer: the scene, the volumes,
segmentations, segment editor logic and ``slicer.util`` are Slicer's own code from the ``slicer-core``
wheel. Only ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` are wired by hand, exactly as
the application does. Tests that use it are marked ``slicer`` and skip when slicer-core is missing
(CI installs it from the ``test`` extra, so there they run).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO_ROOT / "LiverUNet"
for _path in (str(MODULE_DIR), str(REPO_ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)


def _slicerCoreAvailable() -> bool:
    try:
        import slicer
    except ImportError:
        return False
    return hasattr(slicer, "vtkMRMLScene") and hasattr(slicer, "vtkSlicerSegmentationsModuleLogic")


SLICER_CORE = _slicerCoreAvailable()
requires_slicer_core = [
    pytest.mark.slicer,
    pytest.mark.skipif(not SLICER_CORE, reason="slicer-core is not installed (pip install slicer-core==5.12.4.0)"),
]


@dataclass
class SlicerCore:
    """One scene with the Volumes, Segmentations, Data and Subject hierarchy logics."""

    scene: Any
    appLogic: Any
    logics: dict[str, Any] = field(default_factory=dict)

    def clear(self) -> None:
        self.scene.Clear(0)


_CORE: Optional[SlicerCore] = None


def slicerCore() -> SlicerCore:
    """Create the scene and logics once per pytest run and install them as ``slicer.mrmlScene``."""
    global _CORE
    if _CORE is not None:
        return _CORE
    import slicer

    scene = slicer.vtkMRMLScene()
    appLogic = slicer.vtkSlicerApplicationLogic()
    appLogic.SetMRMLScene(scene)
    colorLogic = appLogic.GetColorLogic()
    colorLogic.SetMRMLScene(scene)
    colorLogic.AddDefaultColorNodes()
    appLogic.SetModuleLogic("Colors", colorLogic)
    logics: dict[str, Any] = {}
    for name, cls in (
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),  # registers the converter rules
        ("Data", slicer.vtkSlicerDataModuleLogic),  # removes display nodes of temporary nodes
        ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
    ):
        logic = cls()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(appLogic)
        appLogic.SetModuleLogic(name, logic)
        logics[name] = logic
    slicer.mrmlScene = scene
    slicer.modules = SimpleNamespace(
        volumes=SimpleNamespace(logic=lambda: logics["Volumes"]),
        segmentations=SimpleNamespace(logic=lambda: logics["Segmentations"]),
    )
    _CORE = SlicerCore(scene, appLogic, logics)
    return _CORE


@pytest.fixture
def mrml() -> SlicerCore:
    """A cleared real MRML scene (cleared again afterwards)."""
    core = slicerCore()
    core.clear()
    yield core
    core.clear()


# --- data helpers ---------------------------------------------------------------------------------
def obliqueIjkToRas(spacing=(0.8, 0.9, 2.5), origin=(-40.0, 25.0, -60.0), degrees=(20.0, -10.0, 7.0)) -> np.ndarray:
    """An IJK-to-RAS matrix with rotations about all three axes and anisotropic spacing."""
    ax, ay, az = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def blobImage(shape=(12, 40, 48), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small MRI-like image with a bright ellipsoid 'liver' and its mask (KJI)."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape)
    centre = np.array(shape) / 2.0
    radii = np.array(shape) * np.array([0.35, 0.3, 0.3])
    mask = ((k - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 + ((i - centre[2]) / radii[2]) ** 2 <= 1
    image = (rng.normal(100, 10, shape) + 200 * mask).astype(np.int16)
    return image, mask


def addVolume(array: np.ndarray, ijkToRas: Optional[np.ndarray] = None, name: str = "volume"):
    import slicer

    return slicer.util.addVolumeFromArray(array, ijkToRas if ijkToRas is not None else np.eye(4), name)


def addSegmentation(volumeNode, name: str = "segmentation"):
    import slicer

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    return node


def paintSegment(segmentationNode, volumeNode, mask: np.ndarray, segmentId: str, name: Optional[str] = None) -> str:
    """Add (or replace) a segment holding ``mask`` on the volume's grid, as painting would."""
    import slicer

    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetSegment(segmentId) is None:
        segmentId = segmentation.AddEmptySegment(segmentId, name or segmentId)
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), segmentationNode, segmentId, volumeNode)
    return segmentId


def segmentArray(segmentationNode, segmentId: str, volumeNode) -> np.ndarray:
    import slicer

    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode) > 0
