"""The MONAI side of the speed benchmark: the same 2.5D ensemble as a MONAI user would run it.

A MONAI user with a network trained on axial slices with their neighbours as channels writes:
``LoadImaged`` -> ``EnsureChannelFirstd`` -> ``Orientationd`` -> ``Spacingd`` (in plane) -> intensity
(``ClipIntensityPercentilesd`` + ``NormalizeIntensityd`` for MRI, ``ScaleIntensityRanged`` for CT); each slice
stacked with its neighbours as channels; every network run through ``sliding_window_inference`` (one window per
slice); ``MeanEnsembled`` to average the probabilities; ``Invertd`` back onto the image grid; ``AsDiscreted``,
``KeepLargestConnectedComponentd``; ``SaveImaged``. The networks are LiverUNet's own, with the same weights,
so only the pipeline differs from ours (``bench/speed_measure.ours_segment_file``).

``Orientationd(axcodes="ALS")`` gives the layout the networks learnt (rows toward anterior, columns toward the
patient's left: ``preprocessing.InPlaneOrientation``), so no permutation is needed around them. The neighbours
are stacked inferior to superior, the order of the CHAOS files (slice index toward superior) that ours keeps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from LiverUNetLib.model_file import LiverModel
from LiverUNetLib.preprocessing import Modality

#: The in-plane layout the networks learnt, in MONAI's axis codes (see the module docstring).
NETWORK_AXCODES = "ALS"


def monai_available() -> bool:
    """MONAI and scikit-image (``KeepLargestConnectedComponentd`` needs it) are benchmark-only dependencies."""
    try:
        import monai  # noqa: F401
        import skimage  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class MonaiRun:
    """Seconds per stage of one MONAI run and the mask file it wrote."""

    total: float
    preprocess: float
    infer: float
    postprocess: float
    write: float
    output: Path

    def seconds(self) -> dict[str, float]:
        return {"total": self.total, "preprocess": self.preprocess, "infer": self.infer,
                "postprocess": self.postprocess, "write": self.write}


def stack_neighbours(volume: torch.Tensor, context: int) -> torch.Tensor:
    """(1, H, W, S) image -> (S, 2*context+1, H, W): each slice with its neighbours as channels, repeated at the
    ends (as ``preprocessing.context_indices`` does)."""
    slices = volume[0].permute(2, 0, 1)  # (S, H, W)
    count = slices.shape[0]
    index = torch.arange(count)[:, None] + torch.arange(-context, context + 1)[None, :]
    return slices[index.clamp_(0, count - 1)].contiguous()


class MonaiEnsemblePipeline:
    """MONAI's transforms and inferer around the networks of ``model`` (see the module docstring)."""

    def __init__(self, model: LiverModel, batch_size: int = 8, device: Optional[str] = None,
                 autocast_dtype: Optional[torch.dtype] = None) -> None:
        from monai.transforms import (
            AsDiscreted, ClipIntensityPercentilesd, Compose, EnsureChannelFirstd, Invertd,
            KeepLargestConnectedComponentd, LoadImaged, MeanEnsembled, NormalizeIntensityd, Orientationd,
            ScaleIntensityRanged, Spacingd,
        )

        p = model.preprocess
        spacing = p.in_plane_spacing_mm or -1.0  # non-positive: MONAI keeps the native spacing
        if p.modality is Modality.CT:
            low, high = p.ct_window
            intensity = [ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=-1.0, b_max=1.0, clip=True)]
        else:
            lower, upper = p.mri_percentiles
            intensity = [ClipIntensityPercentilesd("image", lower=lower, upper=upper), NormalizeIntensityd("image")]
        self.pre = Compose([
            LoadImaged("image", image_only=False),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes=NETWORK_AXCODES, labels=None),
            Spacingd("image", pixdim=(spacing, spacing, -1.0), mode="bilinear"),
            *intensity,
        ])
        self.prediction_keys = [f"pred{n}" for n in range(len(model.networks))]
        self.post = Compose([
            MeanEnsembled(self.prediction_keys, output_key="pred"),
            Invertd("pred", transform=self.pre, orig_keys="image", nearest_interp=False),
            AsDiscreted("pred", threshold=model.threshold),
            KeepLargestConnectedComponentd("pred"),
        ])
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # eval mode and channels_last, as ours runs them; MONAI keeps batch norm unfolded and fp32 by default
        self.networks = [net.to(self.device, memory_format=torch.channels_last).eval() for net in model.networks]
        self.autocast_dtype = autocast_dtype
        self.context = p.context_slices
        self.batch_size = batch_size
        self.multiple = model.network_config.size_multiple
        self.threshold = model.threshold

    def _predictor(self, net: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        dtype = self.autocast_dtype

        def predict(x: torch.Tensor) -> torch.Tensor:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
                return torch.sigmoid(net(x)[:, :1].float())  # channel 0: the liver

        return predict

    def predict(self, data: dict[str, Any]) -> dict[str, Any]:
        """One probability map per network, (1, H, W, S) like the preprocessed image, under ``pred<n>``."""
        from monai.data import MetaTensor
        from monai.inferers import sliding_window_inference

        image = data["image"]
        stack = stack_neighbours(image.as_tensor() if hasattr(image, "as_tensor") else image, self.context)
        stack = stack.to(self.device)
        # one window per slice: the whole slice, rounded up to the networks' multiple
        roi = [-(-int(s) // self.multiple) * self.multiple for s in stack.shape[2:]]
        with torch.inference_mode():
            for key, net in zip(self.prediction_keys, self.networks):
                probability = sliding_window_inference(stack, roi_size=roi, sw_batch_size=self.batch_size,
                                                       predictor=self._predictor(net), overlap=0.0,
                                                       padding_mode="reflect")
                # (S, 1, H, W) -> (1, H, W, S); a MetaTensor, which Invertd needs
                data[key] = MetaTensor(probability.permute(1, 2, 3, 0).cpu())
        return data

    def run(self, source: Path, output_dir: Path) -> MonaiRun:
        """Read ``source``, segment it and write ``<stem>_liver.nii.gz`` into ``output_dir``."""
        from monai.transforms import SaveImaged

        t0 = time.perf_counter()
        data = self.pre({"image": str(source)})
        t1 = time.perf_counter()
        data = self.predict(data)
        t2 = time.perf_counter()
        data = self.post(data)
        t3 = time.perf_counter()
        SaveImaged("pred", output_dir=str(output_dir), output_postfix="liver", output_ext=".nii.gz",
                   separate_folder=False, resample=False, output_dtype=np.uint8, print_log=False)(data)
        t4 = time.perf_counter()
        name = Path(str(source)).name
        stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
        return MonaiRun(t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3, output_dir / f"{stem}_liver.nii.gz")
