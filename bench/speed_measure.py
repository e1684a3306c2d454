"""Timing for the speed benchmark: the machine, our end-to-end path, the model alone and its compute bound.

Our end-to-end path is the one ``liverunet segment`` and Slicer's warm worker run with the model already loaded:
``read_image`` -> ``segment_volume`` -> ``write_liver_mask``. The model alone is every network of the ensemble over
the volume's network-ready 2.5D slices, folded and channels_last as ``segment_volume`` runs them; its compute bound
is the networks' FLOPs (``torch.utils.flop_counter``) over the device's peak, measured here with a large matmul.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from LiverUNetLib.image_io import read_image
from LiverUNetLib.inference import InferenceConfig, segment_volume
from LiverUNetLib.model_file import LiverModel
from LiverUNetLib.segmentation_file import write_liver_mask
from LiverUNetLib.volume import Volume


def machine_description() -> dict[str, Any]:
    """CPU, cores, memory, bf16 support, GPU and library versions: what every figure was measured on."""
    cpu = platform.processor() or platform.machine()
    flags = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
        flags = next((ln for ln in lines if ln.startswith("flags")), "")
    memory_gib = 0.0
    with contextlib.suppress(OSError, StopIteration):
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        memory_gib = int(next(ln for ln in meminfo if ln.startswith("MemTotal")).split()[1]) / 2**20
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "os": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with contextlib.suppress(ImportError):
        import monai

        info["monai"] = monai.__version__
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def median(values: list[float]) -> Optional[float]:
    return float(statistics.median(values)) if values else None


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def ours_segment_file(source: Path, output: Path, model: LiverModel, config: Optional[InferenceConfig] = None) -> dict[str, float]:
    """Our end-to-end path with ``model`` loaded (as the CLI and the warm worker keep it); seconds per stage."""
    t0 = time.perf_counter()
    volume = read_image(source)
    t1 = time.perf_counter()
    result = segment_volume(volume, model, config or InferenceConfig())
    t2 = time.perf_counter()
    write_liver_mask(result.mask, output)
    t3 = time.perf_counter()
    return {"total": t3 - t0, "read": t1 - t0, "segment": t2 - t1, "write": t3 - t2}


def network_batch(volume: Volume, model: LiverModel) -> torch.Tensor:
    """The whole volume as network-ready 2.5D slices (N, C, H, W), padded to the networks' multiple."""
    from LiverUNetLib.preprocessing import (
        context_indices, in_plane_spacing, intensity_statistics, network_size, normalise, resample_slices, to_slice_first,
    )

    p = model.preprocess
    axis = volume.slice_axis()
    slices = to_slice_first(volume.array, axis)
    count, height, width = slices.shape
    size = network_size((height, width), in_plane_spacing(volume), p.in_plane_spacing_mm)
    index = context_indices(np.arange(count), count, p.context_slices)
    raw = torch.from_numpy(np.ascontiguousarray(slices[index.ravel()])).view(count, p.in_channels, height, width)
    x = resample_slices(normalise(raw, intensity_statistics(volume.array, p, axis)), size)
    multiple = model.network_config.size_multiple
    pad_h, pad_w = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    if pad_h or pad_w:
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x.contiguous()


def inference_networks(model: LiverModel, device: torch.device) -> list[torch.nn.Module]:
    """The networks exactly as ``segment_volume`` runs them (batch norm folded, channels_last)."""
    from LiverUNetLib.inference import _inference_network

    return [_inference_network(net, device) for net in model.networks]


def model_forward_seconds(networks: list[torch.nn.Module], batch: torch.Tensor, batch_size: int,
                          dtype: Optional[torch.dtype], device: torch.device) -> float:
    """Seconds for every network over ``batch`` in batches of ``batch_size`` (inference mode, channels_last)."""
    started = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for start in range(0, batch.shape[0], batch_size):
            x = batch[start : start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
            for net in networks:
                net(x).float().cpu()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def flops_per_volume(model: LiverModel, batch: torch.Tensor) -> float:
    """FLOPs (2 per multiply-add) of every network over the volume's network-ready slices."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.networks[0](batch[:1].contiguous())
    return float(counter.get_total_flops()) * batch.shape[0] * len(model.networks)


def measured_peak_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large square matmul on this device with the current thread count (median)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        (a @ b).sum().item()
        times.append(time.perf_counter() - started)
    return 2.0 * size**3 / statistics.median(times[1:])


def model_only(volume: Volume, model: LiverModel, peaks: dict[str, float], repeats: int, batch_size: int,
               device: torch.device) -> dict[str, Any]:
    """The ensemble alone on ``volume``'s slices, per precision in ``peaks`` (fp32, bf16), the precisions
    interleaved; medians, against the compute bound."""
    batch = network_batch(volume, model)
    flops = flops_per_volume(model, batch)
    networks = inference_networks(model, device)
    dtypes = {label: (torch.bfloat16 if label == "bf16" else None) for label in peaks}
    times: dict[str, list[float]] = {label: [] for label in dtypes}
    for label, dtype in dtypes.items():  # warm-up: oneDNN builds its kernels on the first call
        model_forward_seconds(networks, batch[:batch_size], batch_size, dtype, device)
    for _ in range(repeats):
        for label, dtype in dtypes.items():
            times[label].append(model_forward_seconds(networks, batch, batch_size, dtype, device))
    entry: dict[str, Any] = {"slices": int(batch.shape[0]), "network_input": list(batch.shape[1:]),
                             "networks": len(networks), "flops": flops}
    for label in dtypes:
        seconds = median(times[label])
        bound = flops / peaks[label]
        entry[label] = {"seconds": seconds, "runs": [round(t, 3) for t in times[label]],
                        "slices_per_s": batch.shape[0] / seconds, "gflops_per_s": flops / seconds / 1e9,
                        "compute_bound_s": bound, "times_bound": seconds / bound}
    return entry


def run_end_to_end(cases: list, models: dict[str, LiverModel], monai: dict[str, dict[str, Any]], repeats: int,
                   work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Ours and every MONAI pipeline of ``monai`` (case name -> label -> pipeline) on each case, interleaved
    (round by round: ours, MONAI, ...; one warm-up round not counted); medians, the masks' agreement with each
    other and with the manual label."""
    runs: dict[str, dict[str, list[dict[str, float]]]] = {c.name: {"ours": []} for c in cases}
    outputs: dict[str, dict[str, Path]] = {c.name: {} for c in cases}
    load: list[float] = []  # the 1-minute load average at each timed round: how busy the shared CPU was
    for round_ in range(repeats + 1):
        if round_:
            load.append(_load_average())
        for c in cases:
            folder = work / c.name
            folder.mkdir(parents=True, exist_ok=True)
            outputs[c.name]["ours"] = folder / "ours_liver.nii.gz"
            timed = {"ours": ours_segment_file(c.source, outputs[c.name]["ours"], models[c.name])}
            for label, pipeline in monai.get(c.name, {}).items():
                run = pipeline.run(c.source, folder / label)
                outputs[c.name][label] = run.output
                timed[label] = run.seconds()
            if round_:
                for label, seconds in timed.items():
                    runs[c.name].setdefault(label, []).append(seconds)
                log(f"  round {round_} {c.name}: " + ", ".join(f"{k} {v['total']:.2f} s" for k, v in timed.items()))
    results = {c.name: _summarise(c, runs[c.name], outputs[c.name]) for c in cases}
    for entry in results.values():
        entry["load_average_per_round"] = load
    return results


def _load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # no load average on this system
        return float("nan")


def _summarise(case: Any, runs: dict[str, list[dict[str, float]]], outputs: dict[str, Path]) -> dict[str, Any]:
    ours_mask = read_image(outputs["ours"])
    rows, columns = ours_mask.array.shape[1:]
    entry: dict[str, Any] = {"source": str(case.source), "model": str(case.model_path),
                             "label": f"{case.name} {columns}x{rows}x{ours_mask.array.shape[0]}"}
    for label, timed in runs.items():
        entry[label] = {key: median([t[key] for t in timed]) for key in timed[0]}
        entry[label]["runs"] = [round(t["total"], 3) for t in timed]
    masks = {label: read_image(path).array for label, path in outputs.items()}
    if "monai" in masks:
        entry["mask_dice_ours_vs_monai"] = dice(masks["ours"], masks["monai"])
        entry["speedup_vs_monai"] = entry["monai"]["total"] / entry["ours"]["total"]
    if "monai_bf16" in masks:
        entry["speedup_vs_monai_bf16"] = entry["monai_bf16"]["total"] / entry["ours"]["total"]
    if case.reference is not None and Path(case.reference).exists():
        reference = read_image(case.reference).array
        liver = reference == case.reference_value if case.reference_value is not None else reference > 0
        entry["reference_dice"] = {label: dice(mask, liver) for label, mask in masks.items()}
    return entry
