"""LiverUNet: liver segmentation with a U-Net you can train by painting, as a 3D Slicer module.

The module file stays thin: the panel sections live in ``LiverUNetGuiLib`` (Qt), the MRML work in
``LiverUNetSlicerLib`` (no Qt; ``LiverUNetLogic`` is re-exported here), the engine in
``LiverUNetLib`` (no Slicer), and the Segment Editor effect in ``SegmentEditorLiverUNetLib``.
Console use::

    import LiverUNet
    segmentationNode = LiverUNet.LiverUNetLogic().segmentLiver(getNode("MyVolume"))
"""

from __future__ import annotations

import sys
from pathlib import Path


def _addSourceTreeLibraryPath() -> None:
    """Make ``import LiverUNetLib`` work in both layouts.

    * Built/installed extension: CMake copies ``LiverUNetLib`` next to this file (into
      qt-scripted-modules), which Slicer already has on ``sys.path``; nothing to do.
    * Source tree (this folder added to Slicer's module paths): the package lives one level up, at the
      repository root, so that root is put first on ``sys.path``. Only done when ``../LiverUNetLib``
      really exists, so an installed copy is never shadowed by an unrelated folder.
    """
    root = Path(__file__).resolve().parent.parent
    if (root / "LiverUNetLib" / "__init__.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))


_addSourceTreeLibraryPath()

import vtk  # noqa: E402

import slicer  # noqa: E402
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleTest,  # noqa: E402
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin  # noqa: E402

from LiverUNetSlicerLib import LiverUNetLogic, TrainingCaseNodes  # noqa: E402,F401  (re-exported for console use)
from LiverUNetSlicerLib.parameter_node import moduleParameterNode  # noqa: E402

EFFECT_SOURCE = Path(__file__).resolve().parent / "SegmentEditorLiverUNetLib" / "SegmentEditorEffect.py"


def registerEditorEffect() -> None:
    """Register the "Liver U-Net" Segment Editor effect (a second registration is ignored by Slicer)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    instance.setPythonSource(str(EFFECT_SOURCE).replace("\\", "/"))
    instance.self().register()


class LiverUNet(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Liver U-Net"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["LiverUNet developers"]
        self.parent.helpText = (
            "Segments the liver in CT or MRI with a U-Net, and trains or fine-tunes that U-Net on slices you "
            "painted in the Segment Editor. Also adds the 'Liver U-Net' Segment Editor effect. "
            "See docs/slicer.md in the LiverUNet repository.")
        self.parent.acknowledgementText = (
            "The code is Apache-2.0. The shipped model weights carry their training data's licence: the MRI "
            "model (CHAOS challenge data) is CC BY-NC-SA 4.0, for non-commercial use only; the CT model (BTCV "
            "data) is CC BY 4.0. A model fine-tuned from a shipped model carries that model's licence. "
            "Uses PyTorch (through the PyTorch extension) and SimpleITK.")
        slicer.app.connect("startupCompleted()", registerEditorEffect)


class LiverUNetWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        """Built without a parent (a standalone panel), the base ``__init__`` calls ``setup()`` itself, so the
        attributes ``setup()`` fills are set before it. Its ``super().__init__()`` already runs
        ``VTKObservationMixin.__init__`` (next in the MRO); running that again would forget ``setup()``'s
        observers, and ``cleanup()`` could then not remove them."""
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from LiverUNetGuiLib.qt_scheduler import QtTimerScheduler
        from LiverUNetGuiLib.segment_panel import SegmentPanel
        from LiverUNetGuiLib.train_panel import TrainPanel

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LiverUNet.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        environment = slicer.util.startupEnvironment() if hasattr(slicer.util, "startupEnvironment") else None
        self.logic = LiverUNetLogic(scheduler=QtTimerScheduler(), workerEnvironment=environment, keepWorkerWarm=True)
        self.segmentPanel = SegmentPanel(self.ui, self.logic, lambda: self._parameterNode)
        self.trainPanel = TrainPanel(self.ui, self.logic, lambda: self._parameterNode,
                                     lambda path: self.segmentPanel.refreshModels(select=path))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        registerEditorEffect()  # for a module loaded after startup; ignored when already registered
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Module closed or reloaded, or Slicer quits: stop running jobs (nothing half-written)."""
        if self.logic is not None:
            self.logic.cancelAll()
            self.logic.shutdownWorker()
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        if self.logic is not None:
            self.logic.cancelAll()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        from LiverUNetGuiLib.parameters import LiverUNetParameterNode

        self.setParameterNode(LiverUNetParameterNode(moduleParameterNode(slicer.mrmlScene)))
        if self._parameterNode.inputVolume is None:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first is not None and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = first

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode is not None:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = parameterNode
        if self._parameterNode is not None:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self.segmentPanel.updateFromParameters()
        self.trainPanel.updateFromParameters()

    def onReload(self) -> None:
        """Slicer's reload re-executes only this file: forget the helper packages first, so that it imports
        one fresh, consistent copy of them (LiverUNetSlicerLib/reload.py says why not reload in place)."""
        from LiverUNetSlicerLib.reload import forgetPackages

        forgetPackages()
        ScriptedLoadableModuleWidget.onReload(self)


class LiverUNetTest(ScriptedLoadableModuleTest):
    """In-Slicer tests; each ``test_*`` is independent (CTest runs them one by one with setUp)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear(0)

    def runTest(self) -> None:
        for name in sorted(n for n in dir(self) if n.startswith("test_")):
            self.setUp()
            getattr(self, name)()

    def test_VolumeGeometry(self) -> None:
        from LiverUNetGuiLib.self_tests import checkVolumeGeometry

        checkVolumeGeometry(self)

    def test_LiverSegment(self) -> None:
        from LiverUNetGuiLib.self_tests import checkLiverSegment

        checkLiverSegment(self)

    def test_PaintedSlicesAndBadInput(self) -> None:
        from LiverUNetGuiLib.self_tests import checkPaintedSlicesAndBadInput

        checkPaintedSlicesAndBadInput(self)

    def test_WidgetAndParameterNode(self) -> None:
        from LiverUNetGuiLib.self_tests import checkWidget

        checkWidget(self)

    def test_EffectRegistered(self) -> None:
        from LiverUNetGuiLib.self_tests import checkEffectRegistered

        checkEffectRegistered(self)

    def test_PanelsAfterFailedStart(self) -> None:
        from LiverUNetGuiLib.self_tests import checkPanelsAfterFailedStart

        checkPanelsAfterFailedStart(self)

    def test_TrainAndSegment(self) -> None:
        from LiverUNetGuiLib.self_tests import checkTrainAndSegment

        checkTrainAndSegment(self)

    def test_EffectApply(self) -> None:
        from LiverUNetGuiLib.self_tests_effect import checkEffectApply

        checkEffectApply(self)
