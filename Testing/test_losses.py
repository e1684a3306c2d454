"""Losses for sparse labels: unannotated slices weigh nothing; boundary weights favour the border."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import one_thread  # noqa: F401 - autouse fixture
from LiverUNetLib.losses import boundary_weight_map, dice_bce_loss, soft_dice


def square_target(n=3, size=24, lo=6, hi=16) -> torch.Tensor:
    target = torch.zeros(n, 1, size, size)
    target[..., lo:hi, lo:hi] = 1.0
    return target


@pytest.mark.parametrize("boundary_w0", [0.0, 5.0])
def test_unannotated_slice_changes_neither_loss_nor_gradient(boundary_w0):
    torch.manual_seed(0)
    target = square_target()
    valid = torch.tensor([1.0, 0.0, 1.0])
    logits = torch.randn(3, 1, 24, 24, requires_grad=True)
    loss = dice_bce_loss(logits, target, valid, boundary_w0=boundary_w0)
    loss.backward()
    grad = logits.grad.clone()

    changed = logits.detach().clone()
    changed[1] = torch.randn(1, 24, 24) * 50  # wildly different prediction on the unknown slice
    changed.requires_grad_(True)
    loss2 = dice_bce_loss(changed, target, valid, boundary_w0=boundary_w0)
    loss2.backward()
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6, abs=1e-7)
    assert float(changed.grad[1].abs().max()) == 0.0
    torch.testing.assert_close(changed.grad[[0, 2]], grad[[0, 2]])
    assert float(grad[0].abs().sum()) > 0  # annotated slices do get a gradient


def test_unannotated_slices_are_unknown_not_background():
    # A label of zeros on an unannotated slice must not pull its prediction towards background.
    torch.manual_seed(1)
    target = square_target(n=2)
    target[1] = 0.0
    logits = torch.randn(2, 1, 24, 24)
    alone = dice_bce_loss(logits[:1], target[:1], torch.tensor([1.0]))
    with_unknown = dice_bce_loss(logits, target, torch.tensor([1.0, 0.0]))
    assert float(with_unknown) == pytest.approx(float(alone), rel=1e-6)


def test_perfect_prediction_gives_almost_zero_loss():
    target = square_target()
    logits = (target * 2 - 1) * 30.0
    valid = torch.ones(3)
    dice = soft_dice(torch.sigmoid(logits), target, valid)
    assert float(1 - dice) < 1e-4
    assert float(dice_bce_loss(logits, target, valid)) < 1e-4
    assert float(dice_bce_loss(logits, target, valid, boundary_w0=10.0)) < 1e-4


def test_wrong_prediction_costs_more_than_a_poor_one():
    target = square_target()
    valid = torch.ones(3)
    wrong = dice_bce_loss((1 - 2 * target) * 5.0, target, valid)
    unsure = dice_bce_loss(torch.zeros_like(target), target, valid)
    right = dice_bce_loss((2 * target - 1) * 5.0, target, valid)
    assert float(wrong) > float(unsure) > float(right)
    assert float(wrong) > 1.5  # Dice term near 1 plus a large BCE


def test_empty_slices_predicted_empty_give_zero_loss():
    target = torch.zeros(2, 1, 16, 16)
    assert float(dice_bce_loss(torch.full_like(target, -30.0), target, torch.ones(2))) < 1e-4
    # and a false positive on an annotated empty slice is punished
    assert float(dice_bce_loss(torch.full_like(target, 5.0), target, torch.ones(2))) > 1.0


def test_no_annotated_slice_gives_zero_loss_with_a_gradient_path():
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    loss = dice_bce_loss(logits, square_target(2, 16, 4, 10), torch.zeros(2))
    assert loss.item() == 0.0
    loss.backward()
    assert float(logits.grad.abs().max()) == 0.0


def test_half_precision_logits_give_a_float32_loss():
    target = square_target()
    logits = torch.randn(3, 1, 24, 24).half()
    loss = dice_bce_loss(logits, target, torch.ones(3))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_boundary_weights_are_highest_near_the_border():
    target = square_target(n=1, size=48, lo=12, hi=36)
    weights = boundary_weight_map(target, w0=5.0, sigma=3.0)
    assert weights.shape == target.shape
    w = weights[0, 0]
    assert float(w.min()) >= 1.0
    assert float(w.max()) == pytest.approx(6.0, abs=0.3)
    border_inside, border_outside = float(w[12, 24]), float(w[11, 24])
    deep_inside, far_outside = float(w[24, 24]), float(w[2, 2])
    assert border_inside > 4.0 and border_outside > 4.0
    assert deep_inside == pytest.approx(1.0, abs=0.01)
    assert far_outside == pytest.approx(1.0, abs=0.01)
    # weights fall off monotonically moving inwards from the edge
    profile = [float(w[r, 24]) for r in range(12, 24)]
    assert all(a >= b for a, b in zip(profile, profile[1:]))


def test_boundary_weights_of_an_empty_slice_are_one():
    weights = boundary_weight_map(torch.zeros(2, 1, 20, 20))
    torch.testing.assert_close(weights, torch.ones(2, 1, 20, 20))


def test_boundary_weight_makes_border_mistakes_cost_more():
    target = square_target(n=1, size=48, lo=12, hi=36)
    valid = torch.ones(1)
    correct = (2 * target - 1) * 6.0
    near = correct.clone()
    near[..., 12, 20:28] *= -1  # 8 wrong pixels on the border
    far = correct.clone()
    far[..., 24, 20:28] *= -1  # 8 wrong pixels deep inside
    plain = [float(dice_bce_loss(x, target, valid)) for x in (near, far)]
    weighted = [float(dice_bce_loss(x, target, valid, boundary_w0=10.0)) for x in (near, far)]
    assert plain[0] == pytest.approx(plain[1], rel=1e-5)  # unweighted: the same number of mistakes
    assert weighted[0] > weighted[1] * 1.5
