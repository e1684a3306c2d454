"""Choosing where the network runs: CUDA, Apple MPS or the CPU, automatically or by request."""

from __future__ import annotations

import contextlib
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


def cpu_has_native_bf16() -> bool:
    """AVX-512-BF16 or AMX: bfloat16 convolutions run natively (about 2x float32 here, docs/benchmarks.md).

    Without them bfloat16 is emulated and slower than float32, so it is not used.
    """
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # noqa: BLE001 - a private probe that may change between torch versions
            pass
    return False


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """Reduced precision for the forward pass where the hardware supports it well, else None (float32).

    GPUs: bfloat16 or float16. CPUs: bfloat16 only with native support (AMX or AVX-512-BF16).
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
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
