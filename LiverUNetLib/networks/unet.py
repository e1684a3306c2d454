"""The 2D U-Net of Ronneberger et al. (2015), with the choices a small liver data set needs.

Contracting path of double 3x3 convolutions and max-pooling, expanding path of transposed
convolutions with skip connections, a 1x1 head and no fully connected layer, He initialisation.
Convolutions are zero-padded ('same') so output and input align; inference supplies mirrored
borders instead of the paper's valid convolutions (see ``inference``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn


class Normalization(str, Enum):
    BATCH = "batch"
    INSTANCE = "instance"
    GROUP = "group"
    NONE = "none"


@dataclass
class NetworkConfig:
    in_channels: int = 1
    # channel 0 is the liver; any more are neighbouring organs learnt alongside it (TrainConfig.neighbour_organs)
    out_channels: int = 1
    base_channels: int = 32
    depth: int = 4
    normalization: Normalization = Normalization.BATCH
    dropout: float = 0.0

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.depth

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["normalization"] = self.normalization.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkConfig":
        values = dict(data)
        values["normalization"] = Normalization(values.get("normalization", "batch"))
        return cls(**values)


def _norm(kind: Normalization, channels: int) -> nn.Module:
    if kind is Normalization.BATCH:
        return nn.BatchNorm2d(channels)
    if kind is Normalization.INSTANCE:
        return nn.InstanceNorm2d(channels, affine=True)
    if kind is Normalization.GROUP:
        # up to 8 groups; the group count must divide the channels (12, 20, 24... channels exist)
        groups = next(g for g in range(min(8, channels), 0, -1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, norm: Normalization, dropout: float = 0.0) -> None:
        bias = norm is Normalization.NONE
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """Returns logits (N, out_channels, H, W); the sigmoid of channel 0 is the liver probability."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
        self.encoders = nn.ModuleList()
        channels = config.in_channels
        for level, width in enumerate(widths):
            dropout = config.dropout if level == config.depth else 0.0
            self.encoders.append(DoubleConv(channels, width, config.normalization, dropout))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose2d(channels, width, kernel_size=2, stride=2))
            self.decoders.append(DoubleConv(2 * width, width, config.normalization))
            channels = width
        self.head = nn.Conv2d(channels, config.out_channels, kernel_size=1)
        self._he_init()

    def _he_init(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < self.config.depth:
                skips.append(x)
                x = self.pool(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips)):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


#: Activation tensors kept per level for the backward pass, in units of that level's width times its
#: area: each DoubleConv keeps its convolutions, normalisations and ReLUs, the decoder also the
#: up-sampled and concatenated maps. A rough upper bound; it only has to catch impossible settings.
_ACTIVATIONS_PER_LEVEL = 16
#: Bytes per parameter while training with AdamW: weight, gradient and two moments in float32.
_TRAINING_BYTES_PER_PARAMETER = 16


def parameter_count(config: NetworkConfig) -> int:
    """Number of parameters of ``UNet(config)``, counted without allocating them (meta device)."""
    with torch.device("meta"):
        return count_parameters(UNet(config))


def training_memory_bytes(config: NetworkConfig, batch_size: int, crop_size: int) -> int:
    """A rough estimate of the memory one training step of ``UNet(config)`` needs: parameters with
    gradients and AdamW moments, plus the activations of a batch of crops padded to
    :attr:`NetworkConfig.size_multiple`. Meant to refuse settings far beyond any machine (a depth
    of 12 pads a 128-pixel crop to 4096 pixels), not to predict memory use closely."""
    multiple = config.size_multiple
    side = -(-max(int(crop_size), 1) // multiple) * multiple
    activations = 0
    for level in range(config.depth + 1):
        width = config.base_channels * 2**level
        activations += width * (side // 2**level) ** 2 * _ACTIVATIONS_PER_LEVEL
    return parameter_count(config) * _TRAINING_BYTES_PER_PARAMETER + activations * 4 * int(batch_size)
