"""Speed and memory benchmark: LiverUNet side by side with MONAI's standard pipeline.

One command (from the repository root, ``../shared/data`` present)::

    python bench/speed.py --model MODEL.pt --repeats 5 --write-docs

What it measures, in one process, with the runs interleaved (A B A B ...) and medians reported:

* end-to-end segmentation (read, preprocess, infer, post-process, write a .nii.gz) of a CHAOS T2
  MRI volume and of the 512x512x78 CHAOS CT DICOM series, ours (``read_image`` ->
  ``segment_volume`` -> ``write_liver_mask``) and MONAI's (``LoadImaged`` / ``Orientationd`` /
  ``Spacingd`` / intensity transforms -> ``sliding_window_inference`` -> ``Invertd`` /
  ``AsDiscreted`` / ``KeepLargestConnectedComponentd`` / ``SaveImaged``) running **the same fold
  networks with the same weights** (wrapped in :class:`MonaiNetwork`), so only the pipeline differs;
  the Dice between the two masks is printed to show that they really compute the same thing;
* model-only throughput (slices/s at network resolution) and peak GPU memory on a GPU;
* peak RAM (VmHWM from /proc, one fresh subprocess per measurement; tracemalloc misses torch's
  allocations) for the MRI, the CT and a synthetic 512x512x200 CT (the CHAOS CT mirrored along z);
* training throughput (slices/s with augmentation) and, with ``--train-to-dice``, the wall time until
  validation Dice reaches 0.90 on the CHAOS MRI set;
* the compute bound: FLOPs of the network per volume (``torch.utils.flop_counter``) divided by the
  device's peak (measured with a large matmul here) and how far the measured model time is from it.

The last line printed is ``end-to-end speed-up vs MONAI: <MONAI seconds / our seconds>`` for the
MRI case (above 1 means LiverUNet is faster). CT runs reuse the MRI model's weights with the CT
intensity window: the timings are honest, the CT masks are not meaningful.
MONAI is a benchmark-only dependency (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from LiverUNetLib.image_io import read_image, write_image  # noqa: E402
from LiverUNetLib.inference import InferenceConfig, segment_volume  # noqa: E402
from LiverUNetLib.model_file import LiverModel, load_model  # noqa: E402
from LiverUNetLib.preprocessing import Modality  # noqa: E402
from LiverUNetLib.segmentation_file import write_liver_mask  # noqa: E402
from LiverUNetLib.volume import Volume  # noqa: E402

DATA_ROOT = Path(os.environ.get("LIVERUNET_DATA", REPO_ROOT.parent / "shared" / "data"))
MRI_SUBJECTS = ["3", "5", "13", "15", "19", "20", "21", "22", "31", "32", "34", "36", "37", "38", "39"]
DOC_START, DOC_END = "<!-- speed.py results: start -->", "<!-- speed.py results: end -->"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def proc_status_mb(field: str = "VmHWM") -> float:
    """A memory figure of this process from /proc/self/status, in MiB (0 where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags = ""
    with contextlib.suppress(OSError):
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    memory_gib = 0.0
    with contextlib.suppress(OSError, StopIteration):
        memory_gib = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1]) / 2**20
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


def with_modality(model: LiverModel, modality: Modality) -> LiverModel:
    """The same networks (shared weights) with another modality's intensity preprocessing."""
    if model.preprocess.modality is modality:
        return model
    preprocess = dataclasses.replace(model.preprocess, modality=modality)
    return LiverModel(model.networks, model.network_config, preprocess, model.card, model.threshold)


def synthesise_large_ct(source: Path, output: Path, slices: int = 200) -> Path:
    """A 512x512x``slices`` CT made by mirroring the CHAOS CT along z (realistic intensities)."""
    if output.exists():
        return output
    volume = read_image(source)
    array = volume.array
    order: list[int] = []
    forward = True
    while len(order) < slices:
        order.extend(range(array.shape[0]) if forward else range(array.shape[0] - 1, -1, -1))
        forward = not forward
    write_image(Volume(np.ascontiguousarray(array[order[:slices]]), volume.ijk_to_ras.copy()), output)
    return output


# --------------------------------------------------------------------------------------------
# Ours
# --------------------------------------------------------------------------------------------
def ours_segment_file(source: Path, output: Path, model: LiverModel, config: Optional[InferenceConfig] = None) -> dict[str, float]:
    """Our end-to-end path as the CLI and the worker run it; returns seconds per stage."""
    t0 = time.perf_counter()
    volume = read_image(source)
    t1 = time.perf_counter()
    result = segment_volume(volume, model, config or InferenceConfig(allow_modality_mismatch=True))
    t2 = time.perf_counter()
    write_liver_mask(result.mask, output)
    t3 = time.perf_counter()
    return {"total": t3 - t0, "read": t1 - t0, "segment": t2 - t1, "write": t3 - t2}


# --------------------------------------------------------------------------------------------
# MONAI: the standard pipeline a MONAI user would write, around the very same networks
# --------------------------------------------------------------------------------------------
class MonaiNetwork(torch.nn.Module):
    """Our fold networks as one MONAI-style predictor: (B, 1, X, Y, 1) RAS patches -> probability.

    MONAI works in RAS (``Orientationd(axcodes="RAS")``); our networks were trained on slices in the
    file's own row/column order. ``set_native_axes`` tells the wrapper how that order maps onto RAS
    (a permutation and flips from the file's affine) so the networks see exactly what they were
    trained on. The mean sigmoid of all folds is returned, as ours does.
    """

    def __init__(self, model: LiverModel) -> None:
        super().__init__()
        self.nets = torch.nn.ModuleList(model.networks)
        self.swapped = False
        self.flips: tuple[int, ...] = ()
        self.channels_last = True
        self.autocast_dtype: Optional[torch.dtype] = None  # fp32, as a MONAI user would run it on a CPU

    def set_native_axes(self, original_affine: np.ndarray) -> None:
        """From the file's IJK->RAS affine: which RAS axis each native in-plane axis (J rows, I columns) is."""
        direction = np.asarray(original_affine, dtype=float)[:3, :3]
        ras_of_i = int(np.argmax(np.abs(direction[:, 0])))
        ras_of_j = int(np.argmax(np.abs(direction[:, 1])))
        # RAS patch axes (X, Y) -> native (J rows, I columns): a transpose unless J is X ("swapped")
        self.swapped = ras_of_j == 0 and ras_of_i == 1
        flips = []
        if direction[ras_of_j, 1] < 0:
            flips.append(-2)
        if direction[ras_of_i, 0] < 0:
            flips.append(-1)
        self.flips = tuple(flips)

    def _to_native(self, x: torch.Tensor) -> torch.Tensor:
        x = x if self.swapped else x.transpose(-1, -2)
        return torch.flip(x, self.flips) if self.flips else x

    def _from_native(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flip(x, self.flips) if self.flips else x
        return x if self.swapped else x.transpose(-1, -2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._to_native(x[..., 0].as_tensor() if hasattr(x, "as_tensor") else x[..., 0])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        total = None
        dtype = self.autocast_dtype
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            for net in self.nets:
                p = torch.sigmoid(net(x)[:, :1].float())  # channel 0: the liver
                total = p if total is None else total + p
        return self._from_native(total / len(self.nets))[..., None]


class MonaiPipeline:
    """LoadImaged -> EnsureChannelFirstd -> Orientationd(RAS) -> Spacingd(in plane) -> intensity ->
    sliding_window_inference -> Invertd -> AsDiscreted -> KeepLargestConnectedComponentd -> SaveImaged."""

    def __init__(self, model: LiverModel, batch_size: int = 8, device: Optional[str] = None, autocast_dtype: Optional[torch.dtype] = None) -> None:
        from monai.transforms import (
            AsDiscreted,
            ClipIntensityPercentilesd,
            Compose,
            EnsureChannelFirstd,
            Invertd,
            KeepLargestConnectedComponentd,
            LoadImaged,
            NormalizeIntensityd,
            Orientationd,
            ScaleIntensityRanged,
            Spacingd,
        )

        p = model.preprocess
        spacing = p.in_plane_spacing_mm or -1.0  # non-positive: MONAI keeps the native spacing
        if p.modality is Modality.CT:
            low, high = p.ct_window
            intensity = [ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=-1.0, b_max=1.0, clip=True)]
        else:
            lower, upper = p.mri_percentiles
            intensity = [ClipIntensityPercentilesd("image", lower=lower, upper=upper), NormalizeIntensityd("image")]
        self.pre = Compose(
            [
                LoadImaged("image", image_only=False),
                EnsureChannelFirstd("image"),
                Orientationd("image", axcodes="RAS", labels=None),
                Spacingd("image", pixdim=(spacing, spacing, -1.0), mode="bilinear"),
                *intensity,
            ]
        )
        self.post_invert = Compose(
            [
                Invertd("pred", transform=self.pre, orig_keys="image", nearest_interp=False),
                AsDiscreted("pred", threshold=model.threshold),
                KeepLargestConnectedComponentd("pred"),
            ]
        )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.network = MonaiNetwork(model).to(self.device).eval()
        self.network.autocast_dtype = autocast_dtype
        for net in self.network.nets:
            net.to(memory_format=torch.channels_last)
        self.batch_size = batch_size
        self.multiple = model.network_config.size_multiple

    def run(self, source: Path, output_dir: Path) -> dict[str, Any]:
        from monai.inferers import sliding_window_inference
        from monai.transforms import SaveImaged

        t0 = time.perf_counter()
        data = self.pre({"image": str(source)})
        self.network.set_native_axes(data["image"].meta["original_affine"])
        t1 = time.perf_counter()
        image = data["image"][None].to(self.device)
        # one window per slice, the whole slice rounded up to the network's multiple (as ours does)
        roi = [-(-int(s) // self.multiple) * self.multiple for s in image.shape[2:4]] + [1]
        with torch.inference_mode():
            prediction = sliding_window_inference(
                image, roi_size=roi, sw_batch_size=self.batch_size, predictor=self.network, overlap=0.0
            )
        data["pred"] = prediction[0].cpu()
        t2 = time.perf_counter()
        data = self.post_invert(data)
        t3 = time.perf_counter()
        saver = SaveImaged(
            "pred", output_dir=str(output_dir), output_postfix="liver", output_ext=".nii.gz",
            separate_folder=False, resample=False, output_dtype=np.uint8, print_log=False,
        )
        saver(data)
        t4 = time.perf_counter()
        name = Path(str(source)).name
        stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
        return {
            "total": t4 - t0, "preprocess": t1 - t0, "infer": t2 - t1, "postprocess": t3 - t2, "write": t4 - t3,
            "output": output_dir / f"{stem}_liver.nii.gz",
        }


def monai_available() -> bool:
    try:
        import monai  # noqa: F401
        import skimage  # noqa: F401  (KeepLargestConnectedComponent needs it)
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Model-only throughput, FLOPs and the compute bound
# --------------------------------------------------------------------------------------------
def network_batch(volume: Volume, model: LiverModel) -> torch.Tensor:
    """The whole volume as network-ready slices (N, C, H, W), padded to the network's multiple."""
    from LiverUNetLib.preprocessing import (
        context_indices, in_plane_spacing, intensity_statistics, network_size, normalise, resample_slices, to_slice_first,
    )

    p = model.preprocess
    slices = to_slice_first(volume.array, volume.slice_axis())
    count, height, width = slices.shape
    size = network_size((height, width), in_plane_spacing(volume), p.in_plane_spacing_mm)
    index = context_indices(np.arange(count), count, p.context_slices)
    raw = torch.from_numpy(np.ascontiguousarray(slices[index.ravel()])).view(count, p.in_channels, height, width)
    x = resample_slices(normalise(raw, intensity_statistics(volume.array, p)), size)
    multiple = model.network_config.size_multiple
    pad_h, pad_w = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    if pad_h or pad_w:
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x.contiguous()


def inference_networks(model: LiverModel, device: torch.device) -> list[torch.nn.Module]:
    """The networks exactly as ``segment_volume`` runs them (batch norm folded, channels_last)."""
    from LiverUNetLib import inference

    maker = getattr(inference, "_inference_network", None)
    if maker is None:  # an older engine: the plain networks
        return [net.to(device, memory_format=torch.channels_last).eval() for net in model.networks]
    return [maker(net, device) for net in model.networks]


def model_forward_seconds(networks: list[torch.nn.Module], batch: torch.Tensor, batch_size: int, dtype: Optional[torch.dtype], device: torch.device) -> float:
    """Seconds for all fold networks over ``batch`` (channels_last, inference mode)."""
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
    """FLOPs (2 x multiply-adds) of all fold networks over the volume's network-ready slices."""
    from torch.utils.flop_counter import FlopCounterMode

    net = model.networks[0]
    one = batch[:1].contiguous()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(one)
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
        t = time.perf_counter()
        (a @ b).sum().item()
        times.append(time.perf_counter() - t)
    return 2.0 * size**3 / statistics.median(times[1:])


# --------------------------------------------------------------------------------------------
# Peak RAM: a fresh subprocess per measurement
# --------------------------------------------------------------------------------------------
def _child_main(args: argparse.Namespace) -> int:
    """Runs inside the measurement subprocess: one end-to-end run, then prints VmHWM as JSON."""
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if args.modality:
        model = with_modality(model, Modality(args.modality))
    baseline = proc_status_mb("VmRSS")
    out = Path(args.child_output)
    if args.child == "ours":
        seconds = ours_segment_file(Path(args.child_input), out / "ours_liver.nii.gz", model)["total"]
    else:
        seconds = MonaiPipeline(model).run(Path(args.child_input), out)["total"]
    result = {"peak_mb": proc_status_mb("VmHWM"), "baseline_mb": baseline, "seconds": seconds}
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("PEAK " + json.dumps(result))
    return 0


def peak_ram(kind: str, source: Path, model_path: Path, modality: Optional[str], threads: int, timeout: float = 900) -> dict[str, float]:
    """Peak resident memory (MiB) of a fresh process doing one end-to-end run (``kind``: ours/monai)."""
    with tempfile.TemporaryDirectory(prefix="liverunet-peak-") as work:
        command = [
            sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-input", str(source),
            "--child-output", work, "--model", str(model_path), "--threads", str(threads),
        ]
        if modality:
            command += ["--modality", modality]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        for line in done.stdout.splitlines():
            if line.startswith("PEAK "):
                return json.loads(line[5:])
        raise RuntimeError(f"peak-RAM child failed ({done.returncode}): {done.stderr[-2000:]}")


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def load_mri_case(subject: str, every_k: int = 1):
    from LiverUNetLib.labels import sparse_label_from_mask
    from LiverUNetLib.training import TrainingCase

    image = read_image(DATA_ROOT / "chaos-mr-t2" / "images" / f"image_{subject}.nii.gz")
    label = read_image(DATA_ROOT / "chaos-mr-t2" / "labels" / f"label_{subject}.nii.gz")
    sparse = sparse_label_from_mask(image, label, label_value=1, dense=True)
    if every_k > 1:
        sparse = sparse.keep_every_k(every_k)
    return TrainingCase(subject, image, sparse)


def training_throughput(cases: list, settings: dict[str, Any], epochs: int = 3, samples: int = 64) -> dict[str, float]:
    """Slices per second of training (sampling + augmentation + forward + backward + step),
    from the median epoch time after the first epoch (no validation)."""
    from LiverUNetLib.training import TrainConfig, train

    stamps: list[float] = []

    def progress(event) -> None:
        if getattr(event, "epoch", None):
            stamps.append(time.perf_counter())

    config = TrainConfig(**{**settings, "epochs": epochs, "samples_per_epoch": samples, "validation_fraction": 0.0, "patience": 0})
    with tempfile.TemporaryDirectory(prefix="liverunet-train-") as work:
        start = time.perf_counter()
        train(cases, config, Path(work) / "m.pt", progress=progress, resume=False)
    durations = [b - a for a, b in zip(stamps, stamps[1:])] or [stamps[0] - start]
    per_epoch = statistics.median(durations)
    used = (samples // config.batch_size) * config.batch_size
    return {"slices_per_s": used / per_epoch, "seconds_per_epoch": per_epoch, "batch_size": config.batch_size}


def time_to_dice(cases: list, validation: list, settings: dict[str, Any], target: float = 0.90, budget_s: float = 600.0) -> dict[str, Any]:
    """Wall time from the start of ``train`` until validation Dice first reaches ``target``
    (validation after every epoch on held-out ``validation`` cases); stops there or at the budget."""
    from LiverUNetLib.errors import CancelledError
    from LiverUNetLib.progress import CancelToken
    from LiverUNetLib.training import TrainConfig, train

    cancel = CancelToken()
    history: list[tuple[float, float]] = []
    start = time.perf_counter()

    def progress(event) -> None:
        if getattr(event, "validation_dice", None) is not None:
            history.append((time.perf_counter() - start, float(event.validation_dice)))
            if event.validation_dice >= target or time.perf_counter() - start > budget_s:
                cancel.cancel()

    all_cases = cases + validation
    fraction = len(validation) / len(all_cases)
    config = TrainConfig(**{**settings, "validation_fraction": fraction, "patience": 0, "validate_every": 1})
    with tempfile.TemporaryDirectory(prefix="liverunet-dice-") as work, contextlib.suppress(CancelledError):
        train(all_cases, config, Path(work) / "m.pt", progress=progress, cancel=cancel, resume=False)
    reached = next((t for t, d in history if d >= target), None)
    return {
        "target": target, "seconds": reached, "budget_s": budget_s,
        "best_dice": max((d for _, d in history), default=None), "history": history,
    }


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    name: str
    source: Path
    modality: Modality


def run_end_to_end(cases: list[Case], model: LiverModel, repeats: int, work: Path, with_monai: bool, log: Callable[[str], None], monai_dtype: Optional[torch.dtype] = None) -> dict[str, Any]:
    """Interleaved ours/MONAI runs per case (one warm-up each, not counted); medians and agreement."""
    results: dict[str, Any] = {}
    pipelines: dict[str, Any] = {}
    models = {c.name: with_modality(model, c.modality) for c in cases}
    if with_monai:
        for c in cases:
            pipelines[c.name] = MonaiPipeline(models[c.name], autocast_dtype=monai_dtype)
    runs: dict[str, dict[str, list]] = {c.name: {"ours": [], "monai": []} for c in cases}
    for round_ in range(repeats + 1):
        for c in cases:
            out = work / c.name
            out.mkdir(parents=True, exist_ok=True)
            ours = ours_segment_file(c.source, out / "ours_liver.nii.gz", models[c.name])
            if round_:
                runs[c.name]["ours"].append(ours)
            if with_monai:
                theirs = pipelines[c.name].run(c.source, out / "monai")
                if round_:
                    runs[c.name]["monai"].append(theirs)
            if round_:
                log(
                    f"  round {round_} {c.name}: ours {ours['total']:.2f} s"
                    + (f", MONAI {theirs['total']:.2f} s" if with_monai else "")
                )
    for c in cases:
        entry: dict[str, Any] = {"source": str(c.source)}
        for who in ("ours", "monai"):
            if runs[c.name][who]:
                keys = [k for k in runs[c.name][who][0] if k != "output"]
                entry[who] = {k: median([r[k] for r in runs[c.name][who]]) for k in keys}
                entry[who]["runs"] = [round(r["total"], 3) for r in runs[c.name][who]]
        if with_monai:
            ours_mask = read_image(work / c.name / "ours_liver.nii.gz").array
            monai_mask = read_image(runs[c.name]["monai"][-1]["output"]).array
            entry["mask_dice_ours_vs_monai"] = dice(ours_mask, monai_mask)
            entry["speedup_vs_monai"] = entry["monai"]["total"] / entry["ours"]["total"]
        results[c.name] = entry
    return results


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print, checkpoint: Callable[[dict], None] = lambda r: None) -> dict[str, Any]:
    """All sections; ``checkpoint(report)`` is called after each, so a long run keeps what it measured."""
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model_path = Path(args.model)
    model = load_model(model_path)
    work = Path(tempfile.mkdtemp(prefix="liverunet-speed-"))
    mri = Path(args.mri) if args.mri else DATA_ROOT / "chaos-mr-t2" / "images" / "image_3.nii.gz"
    ct = Path(args.ct) if args.ct else DATA_ROOT / "chaos-ct-sample" / "dicom"
    cases = [Case("mri", mri, Modality.MRI)]
    if ct.exists() and not args.skip_ct:
        cases.append(Case("ct", ct, Modality.CT))
    with_monai = monai_available() and not args.skip_monai
    report: dict[str, Any] = {
        "command": "python bench/speed.py " + " ".join(args.argv),
        "machine": machine_description(),
        "model": {"path": str(model_path), "description": model.describe().splitlines()[:5]},
        "repeats": repeats_note(args.repeats),
    }
    log(f"machine: {report['machine']['cpu']}, {report['machine']['cpu_count']} CPUs, torch threads {args.threads}, "
        f"GPU: {report['machine']['gpu'] or 'none'}")

    # 1. end to end, interleaved
    log("end-to-end (interleaved ours / MONAI):")
    report["end_to_end"] = run_end_to_end(cases, model, args.repeats, work, with_monai, log)
    checkpoint(report)
    if with_monai and args.monai_bf16:
        log("end-to-end, MONAI with bf16 autocast as well (interleaved with ours):")
        report["end_to_end_vs_monai_bf16"] = run_end_to_end(cases, model, args.repeats, work, True, log, torch.bfloat16)

    # 2. model-only throughput and the compute bound
    report["model"].update(
        {"base_channels": model.network_config.base_channels, "in_plane_spacing_mm": model.preprocess.in_plane_spacing_mm,
         "folds": len(model.networks)}
    )
    peaks = {"fp32": measured_peak_flops(torch.float32)}
    if device.type == "cuda" or report["machine"].get("avx512_bf16"):
        peaks["bf16"] = measured_peak_flops(torch.bfloat16)
    report["peak_flops_measured"] = peaks
    throughput: dict[str, Any] = {}
    for c in cases:
        volume = read_image(c.source)
        cmodel = with_modality(model, c.modality)
        batch = network_batch(volume, cmodel)
        flops = flops_per_volume(cmodel, batch)
        entry: dict[str, Any] = {"slices": int(batch.shape[0]), "network_input": list(batch.shape[1:]), "flops": flops}
        dtypes = {"fp32": None}
        if "bf16" in peaks:
            dtypes["bf16"] = torch.bfloat16
        networks = inference_networks(cmodel, device)
        for label, dtype in dtypes.items():
            times = []
            model_forward_seconds(networks, batch[: args.batch_size], args.batch_size, dtype, device)  # warm-up
            for _ in range(args.repeats):
                times.append(model_forward_seconds(networks, batch, args.batch_size, dtype, device))
            seconds = median(times)
            bound = flops / peaks.get(label, peaks["fp32"])
            entry[label] = {
                "seconds": seconds, "slices_per_s": batch.shape[0] / seconds, "gflops_per_s": flops / seconds / 1e9,
                "compute_bound_s": bound, "times_bound": seconds / bound,
            }
        throughput[c.name] = entry
    report["model_only"] = throughput
    checkpoint(report)

    # 3. peak RAM, fresh subprocess each
    if not args.skip_memory:
        memory: dict[str, Any] = {}
        targets = list(cases)
        if ct.exists() and not args.skip_ct and not args.skip_large_ct:
            big = synthesise_large_ct(ct, Path(tempfile.gettempdir()) / "liverunet_ct_512x512x200.nii.gz")
            targets.append(Case("ct_512x512x200", big, Modality.CT))
        for c in targets:
            modality = c.modality.value if c.modality is not model.preprocess.modality else None
            memory[c.name] = {"ours": peak_ram("ours", c.source, model_path, modality, args.threads)}
            if with_monai:
                memory[c.name]["monai"] = peak_ram("monai", c.source, model_path, modality, args.threads)
            log(f"  peak RAM {c.name}: ours {memory[c.name]['ours']['peak_mb']:.0f} MiB"
                + (f", MONAI {memory[c.name]['monai']['peak_mb']:.0f} MiB" if with_monai else ""))
        report["peak_ram_mb"] = memory
        checkpoint(report)

    # 4. training
    if not args.skip_training:
        settings = {
            "base_channels": model.network_config.base_channels, "depth": model.network_config.depth,
            "in_plane_spacing_mm": model.preprocess.in_plane_spacing_mm, "context_slices": model.preprocess.context_slices,
            "crop_size": args.crop_size, "batch_size": 8, "device": "auto",
        }
        try:
            train_cases = [load_mri_case(s) for s in MRI_SUBJECTS[:3]]
            report["training"] = {"settings": settings, **training_throughput(train_cases, settings, samples=args.train_samples)}
            log(f"  training: {report['training']['slices_per_s']:.1f} slices/s")
        except Exception as error:  # noqa: BLE001 - keep the other sections' results
            report["training_error"] = f"{type(error).__name__}: {error}"
            log(f"  training failed: {report['training_error']}")
        checkpoint(report)
        if args.train_to_dice:
            held = ["3", "21", "37"]
            train_set = [load_mri_case(s, args.every_k) for s in MRI_SUBJECTS if s not in held]
            validation = [load_mri_case(s) for s in held]
            report["time_to_dice"] = time_to_dice(
                train_set, validation, {**settings, "epochs": args.dice_epochs, "samples_per_epoch": 256},
                budget_s=args.dice_budget,
            )
            log(f"  time to validation Dice 0.90: {report['time_to_dice']['seconds']}")
            checkpoint(report)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return report


def repeats_note(repeats: int) -> str:
    return f"{repeats} timed runs per item after one warm-up run; medians; ours and MONAI interleaved"


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------
def _f(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(report: dict[str, Any]) -> list[str]:
    lines = ["| item | LiverUNet | MONAI (same network) | MONAI / ours |", "|---|---|---|---|"]
    for name, e in report.get("end_to_end", {}).items():
        ours, theirs = e.get("ours", {}), e.get("monai")
        lines.append(
            f"| end to end, {name} (s, median) | {_f(ours.get('total'))} | {_f(theirs['total']) if theirs else '-'} | "
            f"{_f(e.get('speedup_vs_monai'))} |"
        )
    for name, e in report.get("end_to_end", {}).items():
        if "mask_dice_ours_vs_monai" in e:
            lines.append(f"| mask agreement {name} (Dice ours vs MONAI) | {e['mask_dice_ours_vs_monai']:.4f} | | |")
    for name, m in report.get("peak_ram_mb", {}).items():
        theirs = m.get("monai")
        lines.append(
            f"| peak RAM {name} (MiB, VmHWM) | {m['ours']['peak_mb']:.0f} | {_f(theirs['peak_mb'], 0) if theirs else '-'} | "
            f"{_f(theirs['peak_mb'] / m['ours']['peak_mb']) if theirs else ''} |"
        )
        if "peak_gpu_mb" in m["ours"]:
            lines.append(
                f"| peak GPU memory {name} (MiB) | {m['ours']['peak_gpu_mb']:.0f} | "
                f"{_f(theirs.get('peak_gpu_mb'), 0) if theirs else '-'} | |"
            )
    for name, t in report.get("model_only", {}).items():
        for label in ("fp32", "bf16"):
            if label in t:
                x = t[label]
                lines.append(
                    f"| model only {name} {label}: {t['slices']} slices {tuple(t['network_input'][1:])} | "
                    f"{x['slices_per_s']:.0f} slices/s, {x['seconds']:.3f} s ({x['gflops_per_s']:.0f} GFLOP/s) | "
                    f"compute bound {x['compute_bound_s']:.3f} s | {x['times_bound']:.1f}x the bound |"
                )
    for name, e in report.get("end_to_end_vs_monai_bf16", {}).items():
        if e.get("monai"):
            lines.append(
                f"| end to end, {name}, vs MONAI with bf16 autocast (s) | {_f(e['ours']['total'])} | {_f(e['monai']['total'])} | "
                f"{_f(e.get('speedup_vs_monai'))} |"
            )
    if "training" in report:
        t = report["training"]
        lines.append(f"| training throughput (slices/s, augmentation included) | {t['slices_per_s']:.1f} | | |")
    if "time_to_dice" in report:
        d = report["time_to_dice"]
        lines.append(
            f"| time to validation Dice {d['target']:.2f} (s) | {_f(d['seconds'], 0) if d['seconds'] else 'not reached'}"
            f" (best {_f(d['best_dice'], 3)}) | | |"
        )
    return lines


def write_docs(report: dict[str, Any], markdown: Path, json_path: Path) -> None:
    """Replace the results block of ``markdown`` (hand-written text around it is kept) and store the
    report as ``latest`` in ``json_path`` (other keys, e.g. earlier runs, are kept)."""
    stored: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(json_path.read_text())
        stored = loaded if isinstance(loaded, dict) else {}
    stored["latest"] = report
    json_path.write_text(json.dumps(stored, indent=1, default=str) + "\n")
    m = report["machine"]
    block = [
        DOC_START,
        f"Measured {report['finished']} with `{report['command']}`.",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPU cores (torch threads {m['torch_threads']}), "
        f"{m['memory_gib']} GiB RAM, AVX-512-BF16 {'yes' if m['avx512_bf16'] else 'no'}, AMX-BF16 "
        f"{'yes' if m['amx_bf16'] else 'no'}; GPU: {m['gpu'] or 'none'}; Python {m['python']}, torch {m['torch']}, "
        f"MONAI {m.get('monai', 'not installed')}; load average at start {m.get('load_average_at_start')}.",
        f"Model: {report['model']['path']} (base {report['model'].get('base_channels')}, "
        f"{report['model'].get('in_plane_spacing_mm')} mm in plane, {report['model'].get('folds')} network(s)). "
        f"{report['repeats']}. Peak matmul measured: "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in report.get("peak_flops_measured", {}).items()) + ".",
        "",
        *format_table(report),
        DOC_END,
    ]
    text = markdown.read_text() if markdown.exists() else "# Benchmarks\n\n" + DOC_START + "\n" + DOC_END + "\n"
    if DOC_START in text and DOC_END in text:
        head, rest = text.split(DOC_START, 1)
        tail = rest.split(DOC_END, 1)[1]
        text = head + "\n".join(block) + tail
    else:
        text += "\n" + "\n".join(block) + "\n"
    markdown.write_text(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="LiverUNet model file (.pt)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per item (median reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per forward pass for model-only timing")
    parser.add_argument("--mri", help="MRI volume (default: CHAOS T2 subject 3)")
    parser.add_argument("--ct", help="CT volume or DICOM folder (default: the CHAOS CT sample)")
    parser.add_argument("--skip-ct", action="store_true")
    parser.add_argument("--skip-large-ct", action="store_true", help="no 512x512x200 peak-RAM measurement")
    parser.add_argument("--skip-monai", action="store_true")
    parser.add_argument("--monai-bf16", action="store_true", help="also compare with MONAI running the networks under bf16 autocast")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--train-samples", type=int, default=64, help="slices per epoch for training throughput")
    parser.add_argument("--crop-size", type=int, default=128, help="training crop size")
    parser.add_argument("--train-to-dice", action="store_true", help="also time training to validation Dice 0.90 (long on a CPU)")
    parser.add_argument("--dice-budget", type=float, default=600.0, help="seconds allowed for --train-to-dice")
    parser.add_argument("--dice-epochs", type=int, default=40, help="epoch schedule for --train-to-dice")
    parser.add_argument("--every-k", type=int, default=1, help="annotated every k-th slice for --train-to-dice")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md and docs/benchmarks.json")
    parser.add_argument("--json", help="also write the raw results here")
    # internal: the peak-RAM subprocess
    parser.add_argument("--child", choices=["ours", "monai"], help=argparse.SUPPRESS)
    parser.add_argument("--child-input", help=argparse.SUPPRESS)
    parser.add_argument("--child-output", help=argparse.SUPPRESS)
    parser.add_argument("--modality", help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.child:
        return _child_main(args)
    def checkpoint(partial: dict) -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(partial, indent=1, default=str) + "\n")

    report = run_benchmark(args, checkpoint=checkpoint)
    print()
    for line in format_table(report):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    if args.write_docs:
        write_docs(report, REPO_ROOT / "docs" / "benchmarks.md", REPO_ROOT / "docs" / "benchmarks.json")
    mri = report["end_to_end"]["mri"]
    ratio = mri.get("speedup_vs_monai")
    print(f"end-to-end speed-up vs MONAI: {ratio:.2f}" if ratio else "end-to-end speed-up vs MONAI: n/a (MONAI skipped or not installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
