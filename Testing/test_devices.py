"""Where bfloat16 is used on a CPU: the rule measured per CPU family, and this machine's answer."""

from __future__ import annotations

import pytest
import torch

from LiverUNetLib.devices import CpuFeatures, autocast_dtype, cpu_features

AMD_ZEN4 = CpuFeatures("AuthenticAMD", amx=False, avx512_bf16=True)
INTEL_AMX = CpuFeatures("GenuineIntel", amx=True, avx512_bf16=True)
INTEL_BF16_NO_AMX = CpuFeatures("GenuineIntel", amx=False, avx512_bf16=True)
NO_BF16 = CpuFeatures("GenuineIntel", amx=False, avx512_bf16=False)


@pytest.mark.parametrize(
    "cpu, inference, training",
    [
        (INTEL_AMX, True, True),
        (AMD_ZEN4, True, True),
        (INTEL_BF16_NO_AMX, True, False),  # bf16 inference faster, a bf16 training step slower (measured)
        (NO_BF16, False, False),
        (CpuFeatures("", amx=False, avx512_bf16=True), True, False),  # unknown vendor: the safe choice
    ],
)
def test_bf16_only_where_it_was_measured_faster(cpu, inference, training):
    assert cpu.bf16_is_faster(training=False) is inference
    assert cpu.bf16_is_faster(training=True) is training


def test_this_cpu_follows_the_rule():
    features = cpu_features()
    for training in (False, True):
        expected = torch.bfloat16 if features.bf16_is_faster(training) else None
        assert autocast_dtype(torch.device("cpu"), training=training) is expected

