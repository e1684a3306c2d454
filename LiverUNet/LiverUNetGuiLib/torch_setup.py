"""Make sure a suitable PyTorch is installed in Slicer's Python, through the PyTorch extension (PyTorchUtils).

Called when a job is about to start, never at module load: the panel works without torch. The version is
read from the package metadata (LiverUNetSlicerLib/torch_version.py); torch itself is imported only by
the worker process (PythonSlicer), which uses the same site-packages, so installing here is enough.
"""

from __future__ import annotations

import logging

import slicer
from LiverUNetSlicerLib.torch_version import TORCH_REQUIREMENT, installedTorchVersion, torchVersionProblem


def ensureTorch() -> bool:
    """True when a suitable torch is installed (installing or upgrading it after asking); shows why when not."""
    installed = installedTorchVersion()
    problem = torchVersionProblem(installed)
    if not problem:
        return True
    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay(
            f"{problem} PyTorch comes with the 'PyTorch' extension: install that extension from the Extensions "
            "Manager, restart Slicer, and try again.", windowTitle="PyTorch missing")
        return False
    if installed is not None and not slicer.util.confirmOkCancelDisplay(
            f"{problem}\n\nInstall a newer PyTorch through the PyTorch extension now? Other extensions that use "
            "PyTorch get the new version too.", windowTitle="PyTorch too old"):
        return False
    try:
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=installed is None,
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
    problem = torchVersionProblem(installedTorchVersion())
    if problem:
        slicer.util.errorDisplay(f"{problem} Install PyTorch {TORCH_REQUIREMENT} in the PyTorch Utils module.",
                                 windowTitle="PyTorch too old")
        return False
    return True
