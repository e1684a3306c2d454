"""Device facts come from the worker, and the torch version from package metadata: Slicer never imports torch.

* the worker's ``devices`` job reports what its torch can use (in-process and through the real worker
  process, via ``LiverUNetLogic.deviceFacts``), and the panel's note is made from that answer;
* an installed torch older than 2.1 (left by another extension) is recognised without importing it;
* no file of the Slicer module (GUI included) imports torch.
"""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest

from slicer_harness import MODULE_DIR, SLICER_CORE


def test_the_worker_devices_job_describes_its_torch():
    import torch

    from LiverUNetLib.progress import CancelToken
    from LiverUNetLib.worker import run_job

    result = run_job({"kind": "devices"}, lambda message: None, CancelToken())
    assert result["kind"] == "devices" and result["torch_version"] == torch.__version__
    assert result["cuda_available"] == torch.cuda.is_available() and result["cuda_build"] == torch.version.cuda


@pytest.mark.slicer
@pytest.mark.skipif(not SLICER_CORE, reason="slicer-core is not installed (pip install slicer-core==5.12.4.0)")
def test_the_logic_asks_a_worker_process(tmp_path):
    import torch

    from LiverUNetSlicerLib import LiverUNetLogic, ModelLibrary

    logic = LiverUNetLogic(modelLibrary=ModelLibrary(tmp_path / "models"), tempRoot=tmp_path / "tmp")
    facts = logic.deviceFacts(timeoutSeconds=120)
    assert facts.torchVersion == torch.__version__ and facts.cudaAvailable == torch.cuda.is_available()
    assert not any((tmp_path / "tmp").iterdir())


def test_the_device_note_is_made_from_the_facts():
    from LiverUNetSlicerLib.device_facts import DeviceFacts, deviceWarning

    cpuBuild = DeviceFacts.fromResult({"torch_version": "2.13.0+cpu", "cuda_build": None, "cuda_available": False,
                                       "mps_available": False})
    assert "CPU-only" in deviceWarning(cpuBuild)
    noGpu = DeviceFacts("2.13.0+cu121", "12.1", False, None, False)
    assert deviceWarning(noGpu).startswith("No GPU found")
    assert deviceWarning(DeviceFacts("2.13.0+cu121", "12.1", True, "H100", False)) == ""
    assert deviceWarning(DeviceFacts("2.13.0", None, False, None, True)) == ""


def test_an_old_torch_is_recognised_without_importing_it():
    from LiverUNetSlicerLib.torch_version import installedTorchVersion, torchVersionProblem, versionTuple

    assert versionTuple("2.13.0+cu121") == (2, 13, 0) and versionTuple("2.1.0a0") == (2, 1, 0)
    assert "needs PyTorch 2.1 or newer, but PyTorch 1.13.1 is installed" in torchVersionProblem("1.13.1")
    assert "not installed" in torchVersionProblem(None)
    assert torchVersionProblem("2.1.0") == "" and torchVersionProblem("2.13.0+cpu") == ""
    assert installedTorchVersion() == importlib.metadata.version("torch")


def _importsTorch(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "torch" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "torch":
            return True
    return False


def test_no_file_of_the_slicer_module_imports_torch():
    offenders = [p.relative_to(MODULE_DIR).as_posix() for p in sorted(MODULE_DIR.rglob("*.py")) if _importsTorch(p)]
    assert offenders == []
