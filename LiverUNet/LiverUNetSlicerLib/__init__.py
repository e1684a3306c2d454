"""Qt-free glue between MRML nodes and LiverUNetLib.

Importable wherever ``slicer`` provides MRML: inside Slicer, in PythonSlicer with a scene, and in a
plain Python process with the ``slicer-core`` wheel (which is how Testing/ checks it). Nothing here
imports qt, ctk or torch.
"""

from .liver_segment import LIVER_COLOR, LIVER_SEGMENT_NAME, LIVER_TERMINOLOGY, SegmentBackup
from .logic import JobHandle, JobResult, LiverUNetLogic, TrainingCaseNodes
from .models import ModelEntry, ModelLibrary
from .options import Device, EffectMode, Modality, StartFrom
from .painted import PaintedSlices, paintedSlices
from .worker_runner import BlockingScheduler, JobStatus, Scheduler

__all__ = [
    "BlockingScheduler", "Device", "EffectMode", "JobHandle", "JobResult", "JobStatus", "LIVER_COLOR",
    "LIVER_SEGMENT_NAME", "LIVER_TERMINOLOGY", "LiverUNetLogic", "Modality", "ModelEntry", "ModelLibrary",
    "PaintedSlices", "Scheduler", "SegmentBackup", "StartFrom", "TrainingCaseNodes", "paintedSlices",
]
