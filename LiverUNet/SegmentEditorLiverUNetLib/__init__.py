"""The "Liver U-Net" Segment Editor effect (loaded by Slicer's effect factory, see SegmentEditorEffect.py)."""

from SegmentEditorEffects.AbstractScriptedSegmentEditorEffect import *  # noqa: F401,F403

from .SegmentEditorEffect import *  # noqa: F401,F403
