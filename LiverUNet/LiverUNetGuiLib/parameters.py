"""The module's settings as one typed parameter node, saved with the scene.

The names here are the ``SlicerParameterName`` properties in ``Resources/UI/LiverUNet.ui``
(nested packs use dotted names such as ``training.epochs``); Testing/test_slicer_static.py checks
that every name exists and that each widget class suits its field's type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper, parameterPack

from LiverUNetSlicerLib.options import Device, Modality, StartFrom


@parameterPack
class TrainingCaseParameters:
    """One training case: a volume and the segment where the liver was painted."""

    volume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    segmentId: str = ""


@parameterPack
class TrainingSettings:
    # 0: automatic, the schedule of how training starts (LiverUNetLib/train_schedule.py): the cross-validated
    # 120 epochs from scratch, fewer from a model (the shipped one by default), which already knows livers
    epochs: Annotated[int, WithinRange(0, 1000)] = 0
    folds: Annotated[int, WithinRange(1, 10)] = 1
    # averaged networks from different random starts; 1 keeps CPU training time (docs/accuracy_notes.md)
    networksPerFold: Annotated[int, WithinRange(1, 5)] = 1
    augmentationStrength: Annotated[float, WithinRange(0.0, 2.0)] = 1.0
    # the painting reaches the liver's top and bottom, so slices well beyond it hold no liver (LiverUNetLib/labels.py)
    liverFreeBeyondPainting: bool = True
    modality: Modality = Modality.AUTO  # read from the training images
    startFrom: StartFrom = StartFrom.SELECTED_MODEL
    modelName: str = "my_liver_model"


@parameterNodeWrapper
class LiverUNetParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelPath: Optional[Path] = None  # None: the shipped model of the image's modality (the worker picks it)
    device: Device = Device.AUTO
    tta: bool = False
    training: TrainingSettings
    trainingCases: list[TrainingCaseParameters]

    def trainConfig(self) -> dict:
        """The ``TrainConfig`` fields the panel sets (the library supplies the rest)."""
        return {
            "epochs": self.training.epochs or None,
            "folds": self.training.folds,
            "networks_per_fold": self.training.networksPerFold,
            "augmentation_strength": float(self.training.augmentationStrength),
            "liver_free_beyond_painting": bool(self.training.liverFreeBeyondPainting),
            "modality": self.training.modality.trainSetting(),
        }
