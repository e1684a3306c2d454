"""Network architectures."""

from .unet import NetworkConfig, Normalization, UNet

__all__ = ["NetworkConfig", "Normalization", "UNet"]
