"""Forget the extension's packages so that a developer's Reload imports every one of them afresh.

Slicer's Reload re-executes only ``LiverUNet.py``. Reloading the helper packages in place, module by
module, leaves modules that were reloaded earlier holding the previous copies of classes defined in
modules reloaded later (``Device``, ``JobStatus``, ``LiverUNetError``...), so identity checks such as
``isinstance(device, Device)`` or ``status is JobStatus.SUCCEEDED`` fail across them. Dropping the
packages from ``sys.modules`` instead makes the re-executed module file import one consistent copy.
"""

from __future__ import annotations

import sys

PACKAGES = ("LiverUNetLib", "LiverUNetSlicerLib", "LiverUNetGuiLib")


def forgetPackages(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Remove ``packages`` and all their submodules from ``sys.modules``; return the names removed."""
    names = [name for name in list(sys.modules) if name.split(".")[0] in packages]
    for name in names:
        del sys.modules[name]
    return sorted(names)
