"""``LiverUNetWidget()`` built without a parent keeps what its ``setup()`` made.

In Slicer 5.10, ``ScriptedLoadableModuleWidget.__init__`` (Base/Python/slicer/ScriptedLoadableModule.py,
lines 89-110) calls ``super().__init__()``, then, when no parent is given, makes a panel and calls
``self.setup()`` before returning. The stand-in base below repeats exactly those steps, with a strict
parent; ``VTKObservationMixin`` is Slicer's own (slicer.util from slicer-core) and the scene is real.
``setup()`` itself needs Qt, so the test swaps in one that does what the real one does to the state:
observe the scene and set the logic and the parameter node.
"""

from __future__ import annotations

import importlib
import sys
import types
import unittest

from slicer_harness import mrml, requires_slicer_core  # noqa: F401

pytestmark = requires_slicer_core


class StrictParent:
    """The standalone panel; the constructor only stores it."""

    __slots__ = ()


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__.removesuffix("Widget")
        self.parent = StrictParent() if not parent else parent
        if not parent:
            self.setup()


class ScriptedLoadableModule:
    def __init__(self, parent):
        raise AssertionError("not used here")


class ScriptedLoadableModuleTest(unittest.TestCase):
    pass


def importModuleFile(monkeypatch):
    standIn = types.ModuleType("slicer.ScriptedLoadableModule")
    standIn.ScriptedLoadableModule = ScriptedLoadableModule
    standIn.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    standIn.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", standIn)
    monkeypatch.delitem(sys.modules, "LiverUNet", raising=False)
    module = importlib.import_module("LiverUNet")
    monkeypatch.delitem(sys.modules, "LiverUNet")
    return module


def test_a_widget_built_without_parent_keeps_its_setup(mrml, monkeypatch):
    import slicer

    LiverUNet = importModuleFile(monkeypatch)

    def setup(self) -> None:
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.logic = "logic made by setup"
        self._parameterNode = "parameter node made by setup"

    monkeypatch.setattr(LiverUNet.LiverUNetWidget, "setup", setup)
    widget = LiverUNet.LiverUNetWidget()
    assert widget.logic == "logic made by setup"
    assert widget._parameterNode == "parameter node made by setup"
    assert [(obj, event) for obj, event, *_ in widget.Observations] == [
        (slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent)]
    tag = widget.Observations[0][4]
    assert slicer.mrmlScene.GetCommand(tag) is not None
    widget.removeObservers()
    assert widget.Observations == []
    assert slicer.mrmlScene.GetCommand(tag) is None, "cleanup() must be able to remove setup()'s observer"
