"""The 2D U-Net: paper layout, shapes, no dense layer, transposed-convolution up-sampling, He init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine_helpers import one_thread  # noqa: F401 - autouse fixture
from LiverUNetLib.networks import NetworkConfig, Normalization, UNet
from LiverUNetLib.networks.unet import count_parameters


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("normalization", list(Normalization))
def test_output_shape_equals_input_shape(depth, normalization):
    config = NetworkConfig(in_channels=1, base_channels=4, depth=depth, normalization=normalization)
    net = UNet(config).eval()
    size = config.size_multiple * 3
    x = torch.randn(2, 1, size, size + config.size_multiple)
    with torch.no_grad():
        y = net(x)
    assert tuple(y.shape) == (2, 1, size, size + config.size_multiple)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("context", [1, 2])
def test_in_channels_for_2_5d(context):
    in_channels = 2 * context + 1
    net = UNet(NetworkConfig(in_channels=in_channels, base_channels=4, depth=2)).eval()
    assert net.encoders[0][0].in_channels == in_channels
    with torch.no_grad():
        assert tuple(net(torch.randn(1, in_channels, 16, 24)).shape) == (1, 1, 16, 24)
    with pytest.raises(RuntimeError):
        net(torch.randn(1, 1, 16, 24))


@pytest.mark.parametrize("base_channels", [2, 3, 4, 6, 8, 12, 16, 20])
def test_every_base_width_builds_with_every_normalisation(base_channels):
    for normalization in Normalization:
        net = UNet(NetworkConfig(base_channels=base_channels, depth=2, normalization=normalization)).eval()
        with torch.no_grad():
            assert tuple(net(torch.randn(1, 1, 8, 8)).shape) == (1, 1, 8, 8)


def test_paper_layout():
    config = NetworkConfig(in_channels=1, base_channels=8, depth=3)
    net = UNet(config)
    modules = list(net.modules())
    assert not any(isinstance(m, nn.Linear) for m in modules), "a U-Net has no fully connected layer"
    ups = [m for m in modules if isinstance(m, nn.ConvTranspose2d)]
    assert len(ups) == config.depth
    assert all(m.kernel_size == (2, 2) and m.stride == (2, 2) for m in ups)
    assert not any(isinstance(m, nn.Upsample) for m in modules)
    pools = [m for m in modules if isinstance(m, nn.MaxPool2d)]
    assert pools and all(p.kernel_size == 2 for p in pools)
    # contracting widths double per level; the expanding path halves them back
    widths = [enc[0].out_channels for enc in net.encoders]
    assert widths == [8, 16, 32, 64]
    assert [dec[0].out_channels for dec in net.decoders] == [32, 16, 8]
    # skip connections: each decoder sees its up-sampled input concatenated with the encoder features
    assert [dec[0].in_channels for dec in net.decoders] == [64, 32, 16]
    # 3x3 convolutions in the double-conv blocks, a 1x1 head with one output (sigmoid applied later)
    convs = [m for m in modules if isinstance(m, nn.Conv2d) and m is not net.head]
    assert all(m.kernel_size == (3, 3) for m in convs)
    assert net.head.kernel_size == (1, 1) and net.head.out_channels == 1


def test_normalisation_layers():
    kinds = {
        Normalization.BATCH: nn.BatchNorm2d,
        Normalization.INSTANCE: nn.InstanceNorm2d,
        Normalization.GROUP: nn.GroupNorm,
    }
    for kind, layer in kinds.items():
        net = UNet(NetworkConfig(base_channels=4, depth=2, normalization=kind))
        assert sum(isinstance(m, layer) for m in net.modules()) == 2 * (2 * 2 + 1)
        # a convolution followed by a normalisation needs no bias
        assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d) and m is not net.head)
    plain = UNet(NetworkConfig(base_channels=4, depth=2, normalization=Normalization.NONE))
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) for m in plain.modules())
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))


def test_he_initialisation_statistics():
    torch.manual_seed(0)
    net = UNet(NetworkConfig(base_channels=16, depth=3, normalization=Normalization.NONE))
    checked = 0
    for module in net.modules():
        if type(module) is nn.Conv2d and module.weight.numel() >= 4000:
            out_channels, _, kh, kw = module.weight.shape
            expected = math.sqrt(2.0 / (out_channels * kh * kw))  # He, fan_out mode
            std = float(module.weight.detach().std())
            assert std == pytest.approx(expected, rel=0.08), module
            assert abs(float(module.weight.detach().mean())) < 0.1 * expected
            checked += 1
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.bias is not None:
            assert float(module.bias.detach().abs().max()) == 0.0
    assert checked >= 6


def test_he_initialisation_keeps_activations_alive_through_depth():
    torch.manual_seed(1)
    net = UNet(NetworkConfig(base_channels=16, depth=4, normalization=Normalization.NONE)).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 1, 64, 64))
    # PyTorch's default init would shrink the signal by orders of magnitude over ~20 layers
    assert 0.05 < float(y.std()) < 50


def test_config_round_trip_and_size_multiple():
    config = NetworkConfig(in_channels=3, base_channels=6, depth=3, normalization=Normalization.GROUP, dropout=0.1)
    assert config.size_multiple == 8
    assert NetworkConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["normalization"] == "group"


def test_dropout_only_at_the_bottleneck():
    net = UNet(NetworkConfig(base_channels=4, depth=2, dropout=0.5))
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout2d)]
    assert len(drops) == 1 and any(isinstance(m, nn.Dropout2d) for m in net.encoders[-1])


def test_parameter_count_scales_with_width():
    small = count_parameters(UNet(NetworkConfig(base_channels=4, depth=2)))
    large = count_parameters(UNet(NetworkConfig(base_channels=8, depth=2)))
    assert 3.5 * small < large < 4.5 * small


def test_gradients_reach_the_first_layer():
    net = UNet(NetworkConfig(base_channels=4, depth=2))
    net(torch.randn(2, 1, 16, 16)).mean().backward()
    assert float(net.encoders[0][0].weight.grad.abs().sum()) > 0
