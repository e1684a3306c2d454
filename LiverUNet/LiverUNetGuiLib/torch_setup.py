"""Make sure PyTorch is installed in Slicer's Python, through the PyTorch extension (PyTorchUtils).

Called when a job is about to start, never at module load: the panel works without torch.
The worker (PythonSlicer) uses the same site-packages, so installing here is enough.
"""

from __future__ import annotations

import importlib.util
import logging

import slicer

TORCH_REQUIREMENT = ">=2.1"


def torchInstalled() -> bool:
    return importlib.util.find_spec("torch") is not None


def ensureTorch() -> bool:
    """True when torch is available (installing it after asking); shows why when it is not."""
    if torchInstalled():
        return True
    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay(
            "LiverUNet needs PyTorch, which comes with the 'PyTorch' extension. Install that extension "
            "from the Extensions Manager, restart Slicer, and try again.", windowTitle="PyTorch missing")
        return False
    try:
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                              torchVersionRequirement=TORCH_REQUIREMENT)
    except Exception as error:  # pip or network failures: say so plainly
        logging.exception("PyTorch installation failed")
        slicer.util.errorDisplay(
            "Installing PyTorch failed. Check the network connection (or proxy), then open the PyTorch Utils "
            "module and install it from there; on a machine without network access, install a PyTorch wheel "
            f"with slicer.util.pip_install('<wheel file>').\n\nDetails: {error}", windowTitle="PyTorch install failed")
        return False
    if torch is None:
        slicer.util.infoDisplay("PyTorch was not installed, so LiverUNet cannot run yet.", windowTitle="PyTorch")
        return False
    return True

