"""What the worker's torch can use (GPU or not), asked of the worker: Slicer's process never imports torch.

``LiverUNetLogic.deviceFactsAsync`` runs the worker's ``devices`` job (LiverUNetLib/worker.py); the panel
shows :func:`deviceWarning` of the answer under its device choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class DeviceFacts:
    torchVersion: str
    cudaBuild: Optional[str]  # the CUDA version torch was built for; None for a CPU-only build
    cudaAvailable: bool
    cudaDevice: Optional[str]
    mpsAvailable: bool

    @classmethod
    def fromResult(cls, result: Mapping[str, Any]) -> "DeviceFacts":
        """From the worker's ``devices`` result line."""
        return cls(str(result.get("torch_version") or ""), result.get("cuda_build"),
                   bool(result.get("cuda_available")), result.get("cuda_device"), bool(result.get("mps_available")))

    @property
    def gpu(self) -> bool:
        return self.cudaAvailable or self.mpsAvailable


def deviceWarning(facts: DeviceFacts) -> str:
    """The note under the device choice: empty when a GPU is usable."""
    if facts.gpu:
        return ""
    if facts.cudaBuild is None:
        return ("No GPU: this PyTorch build is CPU-only. Segmenting takes minutes and training is slow; "
                "reinstall PyTorch for your GPU in the PyTorch Utils module if you have one.")
    return "No GPU found: the CPU will be used (segmenting takes minutes, training is slow)."
