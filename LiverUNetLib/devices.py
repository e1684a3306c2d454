"""Choosing where the network runs: CUDA, Apple MPS or the CPU, automatically or by request."""

from __future__ import annotations

import contextlib
import functools
import platform
from dataclasses import dataclass
from enum import Enum
from typing import Iterator, Optional, Union

import torch

from .errors import LiverUNetError


class DeviceChoice(str, Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(choice: Union[DeviceChoice, str, None] = DeviceChoice.AUTO) -> torch.device:
    """The torch device for ``choice``; an explicit GPU request without a GPU is an error, not a fallback."""
    try:
        choice = DeviceChoice(choice or DeviceChoice.AUTO)
    except ValueError:
        raise LiverUNetError(
            f"Unknown device {choice!r}; use one of: {', '.join(c.value for c in DeviceChoice)}."
        ) from None
    if choice is DeviceChoice.AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice is DeviceChoice.CUDA and not torch.cuda.is_available():
        raise LiverUNetError(
            "A CUDA GPU was requested but none is available to PyTorch. Use --device auto or cpu, or "
            "install a CUDA build of PyTorch."
        )
    if choice is DeviceChoice.MPS and not _mps_available():
        raise LiverUNetError("Apple MPS was requested but is not available. Use --device auto or cpu.")
    return torch.device(choice.value)


@dataclass(frozen=True)
class CpuFeatures:
    """What decides whether bfloat16 pays on a CPU: the vendor and the native bf16 instructions."""

    vendor: str  # "GenuineIntel", "AuthenticAMD", or "" where it cannot be read
    amx: bool
    avx512_bf16: bool

    def bf16_is_faster(self, training: bool) -> bool:
        """Measured per CPU family (docs/benchmarks.md): AMX (Intel) and AVX-512-BF16 on AMD Zen 4 run
        bfloat16 training about twice as fast as float32. An Intel CPU with AVX-512-BF16 but no AMX ran
        inference faster in bf16 (2.5 s against 3.0 s) but a training step slower (0.96 s against 0.83 s),
        so it trains in float32. Elsewhere bfloat16 is emulated and slower."""
        if self.amx:
            return True
        if not self.avx512_bf16:
            return False
        return not training or self.vendor == "AuthenticAMD"


def _cpu_vendor() -> str:
    """The CPU vendor string from /proc/cpuinfo (Linux) or the platform's processor text (Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    text = platform.processor()
    return next((vendor for vendor in ("AuthenticAMD", "GenuineIntel") if vendor in text), "")


def _torch_cpu_probe(name: str) -> bool:
    check = getattr(getattr(torch, "cpu", None), name, None)
    try:
        return bool(check is not None and check())
    except Exception:  # noqa: BLE001 - a private probe that may change between torch versions
        return False


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    return CpuFeatures(
        vendor=_cpu_vendor(),
        amx=_torch_cpu_probe("_is_amx_tile_supported"),
        avx512_bf16=_torch_cpu_probe("_is_avx512_bf16_supported"),
    )


def autocast_dtype(device: torch.device, training: bool = False) -> Optional[torch.dtype]:
    """Reduced precision for the forward pass where the hardware runs it faster, else None (float32).

    GPUs: bfloat16 or float16. CPUs: bfloat16 where this CPU family was measured faster with it,
    for inference or for training (``CpuFeatures.bf16_is_faster``).
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    if device.type == "cpu" and cpu_features().bf16_is_faster(training):
        return torch.bfloat16
    return None


def is_out_of_memory(error: BaseException) -> bool:
    """True for GPU (and CPU allocator) out-of-memory errors, across torch versions and backends."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "mps backend out of memory" in text)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


@contextlib.contextmanager
def fast_cpu_math() -> Iterator[None]:
    """Flush denormal floats to zero on the CPU while a job runs, then restore IEEE behaviour.

    Adam's second moments and saturated sigmoids produce denormals; on x86 CPUs each one costs
    hundreds of cycles. Measured here: a training epoch fell from 30-59 s to 7 s (docs/benchmarks.md).
    Results change by less than float32 resolution near zero. The setting is per thread and global,
    so it is switched off again afterwards for the caller's own code.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
