"""Place a result next to its input in the subject hierarchy (same patient/study folder)."""

from __future__ import annotations

import slicer


def placeBeside(node: slicer.vtkMRMLNode, besideNode: slicer.vtkMRMLNode) -> bool:
    """Move ``node``'s item under ``besideNode``'s parent item; False when there is nothing to do.

    In the Slicer application every node gets an item automatically; where none exists yet (for
    example a bare MRML scene) one is created under the same parent.
    """
    scene = node.GetScene()
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene) if scene else None
    if shNode is None:
        return False
    besideItem = shNode.GetItemByDataNode(besideNode)
    if not besideItem:
        return False
    parentItem = shNode.GetItemParent(besideItem)
    item = shNode.GetItemByDataNode(node)
    if not item:
        return bool(shNode.CreateItem(parentItem, node))
    if shNode.GetItemParent(item) != parentItem:
        shNode.SetItemParent(item, parentItem)
    return True
