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


def gpuWarning() -> str:
    """A warning to show when no GPU is usable (checked without importing torch at module load)."""
    if not torchInstalled():
        return "PyTorch is not installed yet; it will be installed when you first segment or train."
    try:
        import torch

        if torch.cuda.is_available():
            return ""
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return ""
        if torch.version.cuda is None:
            return ("No GPU: this PyTorch build is CPU-only. Segmenting takes minutes and training is slow; "
                    "reinstall PyTorch for your GPU in the PyTorch Utils module if you have one.")
        return "No GPU found: the CPU will be used (segmenting takes minutes, training is slow)."
    except Exception as error:
        return f"PyTorch could not be loaded ({error}); reinstall it in the PyTorch Utils module."
