"""The module's singleton parameter node in a scene (what ScriptedLoadableModuleLogic would make).

Kept Qt-free so the widget, the effect and tests find the same node the same way.
"""

from __future__ import annotations

import slicer

MODULE_NAME = "LiverUNet"


def moduleParameterNode(scene: slicer.vtkMRMLScene, moduleName: str = MODULE_NAME) -> slicer.vtkMRMLScriptedModuleNode:
    """The scene's ``vtkMRMLScriptedModuleNode`` tagged ``moduleName``, created when missing."""
    node = scene.GetSingletonNode(moduleName, "vtkMRMLScriptedModuleNode")
    if node is not None:
        # a scene close keeps singleton nodes but resets them, attributes included
        if node.GetAttribute("ModuleName") != moduleName:
            node.SetAttribute("ModuleName", moduleName)
        return node
    node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
    node.UnRegister(None)  # CreateNodeByClass returns an owned reference
    node.SetSingletonTag(moduleName)
    node.SetName(scene.GenerateUniqueName(moduleName))
    node.SetAttribute("ModuleName", moduleName)
    return scene.AddNode(node)
