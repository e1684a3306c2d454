"""A strict stand-in for the Segment Editor's ``scriptedEffect``, delegating to Slicer's real logic.

In Slicer 5.10+ ``qSlicerSegmentEditorAbstractEffect`` does nothing itself for these calls: it asks
``vtkSlicerSegmentEditorLogic`` (``UpdateVolume`` -> ``UpdateAlignedSourceVolume`` /
``UpdateSelectedSegmentLabelmap`` / ``ResetModifierLabelmapToDefault``; ``SaveStateForUndo``;
``ModifySegmentByLabelmap(..., perSegment, bypassMasking)``). This adapter makes the same calls on the
same C++ class from slicer-core, so masking, overlap and undo behave as in the application. Only the
methods the effect uses exist; anything else raises ``AttributeError`` (``__slots__``, no fallbacks).
"""

from __future__ import annotations


class ScriptedEffectAdapter:
    __slots__ = ("logic", "editorNode", "perSegment", "calls")

    def __init__(self, scene, segmentationNode, sourceVolumeNode, segmentId: str) -> None:
        import slicer

        self.editorNode = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        self.logic = slicer.vtkSlicerSegmentEditorLogic()
        self.logic.SetMRMLScene(scene)
        self.logic.SetSegmentEditorNode(self.editorNode)
        self.logic.SetSegmentationNode(segmentationNode)
        self.logic.SetSourceVolumeNode(sourceVolumeNode)
        self.logic.SetCurrentSegmentID(segmentId)
        self.perSegment = True  # the Liver U-Net effect works on the selected segment
        self.calls: list[str] = []

    def parameterSetNode(self):
        return self.editorNode

    def sourceVolumeImageData(self):
        return self.logic.GetAlignedSourceVolume() if self.logic.UpdateAlignedSourceVolume() else None

    def selectedSegmentLabelmap(self):
        return self.logic.GetSelectedSegmentLabelmap() if self.logic.UpdateSelectedSegmentLabelmap() else None

    def defaultModifierLabelmap(self):
        return self.logic.GetModifierLabelmap() if self.logic.ResetModifierLabelmapToDefault() else None

    def saveStateForUndo(self) -> None:
        self.calls.append("saveStateForUndo")
        self.logic.SaveStateForUndo()

    def modifySelectedSegmentByLabelmap(self, labelmap, mode, bypassMasking: bool = False) -> None:
        self.calls.append("modifySelectedSegmentByLabelmap")
        self.logic.ModifySegmentByLabelmap(self.editorNode.GetSegmentationNode(),
                                           self.editorNode.GetSelectedSegmentID() or "", labelmap, mode,
                                           self.perSegment, bypassMasking)
