"""Which PyTorch is installed in Slicer's Python, read from its package metadata without importing it.

Importing torch in Slicer's process blocks the GUI for seconds, initialises CUDA there and, on Windows,
locks torch's files so that PyTorch Utils cannot replace them until Slicer restarts. The jobs run torch
in the worker process; Slicer only needs to know whether a suitable version is installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from typing import Optional

TORCH_MINIMUM = (2, 1)
TORCH_REQUIREMENT = ">=2.1"  # what PyTorch Utils is asked to install


def installedTorchVersion() -> Optional[str]:
    """The installed torch distribution's version ("2.13.0+cu121"), or None when there is none."""
    importlib.invalidate_caches()  # a version installed a moment ago by pip must be seen
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def versionTuple(version: str) -> tuple[int, ...]:
    """The leading release numbers of a version string: "2.13.0+cu121" -> (2, 13, 0), "2.1.0a0" -> (2, 1, 0)."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def torchVersionProblem(version: Optional[str]) -> str:
    """Empty when ``version`` meets the requirement; otherwise what to tell the user."""
    if version is None:
        return "LiverUNet needs PyTorch, which is not installed yet."
    if versionTuple(version) < TORCH_MINIMUM:
        wanted = ".".join(str(part) for part in TORCH_MINIMUM)
        return (f"LiverUNet needs PyTorch {wanted} or newer, but PyTorch {version} is installed "
                "(perhaps by another extension).")
    return ""
