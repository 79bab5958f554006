"""The EMA of weights: its arithmetic, its warm-up, buffers, and its checkpoint."""

import io

import pytest
import torch
from torch import nn

from modeling_spa.training.averaging import ExponentialMovingAverage


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_ema_follows_the_formula_with_and_without_warm_up():
    model = small_model()
    start = model[0].weight.detach().clone()
    plain = ExponentialMovingAverage(model, decay=0.9, warmup=False)
    warm = ExponentialMovingAverage(model, decay=0.9, warmup=True)
    expected_plain, expected_warm = start.clone(), start.clone()
    for n in range(4):
        with torch.no_grad():
            model[0].weight.add_(1.0 + n)
        d = min(0.9, (1 + n) / (10 + n))  # 0.1, 0.1818, 0.25, 0.3077: the warm-up keeps early averages close
        assert warm.current_decay() == pytest.approx(d) and plain.current_decay() == 0.9
        plain.update(model)
        warm.update(model)
        expected_plain = 0.9 * expected_plain + 0.1 * model[0].weight.detach()
        expected_warm = d * expected_warm + (1 - d) * model[0].weight.detach()
    torch.testing.assert_close(plain.module[0].weight, expected_plain)
    torch.testing.assert_close(warm.module[0].weight, expected_warm)
    assert not plain.module.training and not any(p.requires_grad for p in plain.module.parameters())


def test_buffers_float_averaged_integers_copied():
    model = small_model()
    ema = ExponentialMovingAverage(model, decay=0.5, warmup=False)
    model.train()
    model(torch.randn(8, 3) + 4)  # BatchNorm statistics move, num_batches_tracked counts
    ema.update(model)
    bn, avg = model[1], ema.module[1]
    torch.testing.assert_close(avg.running_mean, 0.5 * bn.running_mean)  # from 0: half way
    assert avg.num_batches_tracked.item() == 1


def test_state_dict_round_trip_as_accelerate_saves_it():
    model = small_model()
    ema = ExponentialMovingAverage(model, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            model[0].weight.mul_(1.5)
        ema.update(model)
    buffer = io.BytesIO()
    torch.save(ema.state_dict(), buffer)
    buffer.seek(0)
    restored = ExponentialMovingAverage(small_model(), decay=0.5)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.num_updates == 3 and restored.decay == 0.99
    torch.testing.assert_close(restored.module[0].weight, ema.module[0].weight)
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(model, decay=1.0)
