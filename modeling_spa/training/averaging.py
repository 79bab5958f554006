"""An exponential moving average (EMA) of a model's weights, kept as a model of its own.

After every optimizer step, each floating-point entry of the state dict (parameters, and buffers such as BatchNorm
statistics, as timm's ModelEma does) moves towards the live one: avg ← avg + (1 − d) · (live − avg), one fused
`torch._foreach_lerp_` over all tensors with no host read; integer buffers are copied. With `warmup`, the decay
ramps as min(d, (1 + n) / (10 + n)) over the n updates so far, so that a short run's average is not dominated by the
initial weights (timm's warm-up). `module` is an ordinary model: evaluate it, save it with `save_pretrained`.

`torch.optim.swa_utils.AveragedModel` does the same with a `get_ema_multi_avg_fn`, but reads its update count back to
the host at every update (`if self.n_averaged == 0`), a synchronisation per step on a GPU.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ExponentialMovingAverage:
    """EMA of `model`'s weights with decay `decay`, in `module` (a frozen copy of `model`, in eval mode).

    `state_dict` / `load_state_dict` make it a checkpointable object (`accelerator.register_for_checkpointing`).
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.num_updates = decay, warmup, 0
        self._pairs_of: int | None = None

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    def _pairs(self, model: nn.Module) -> tuple[list, list, list, list]:
        # Cached per live model: its parameters and buffers stay the same tensor objects once it is on its device.
        if self._pairs_of != id(model):
            live = model.state_dict(keep_vars=True)
            average = self.module.state_dict(keep_vars=True)
            if live.keys() != average.keys():
                raise ValueError("the model's state dict does not match the average's")
            floats = [k for k in live if live[k].is_floating_point()]
            others = [k for k in live if not live[k].is_floating_point()]
            self._cache = (
                [average[k].data for k in floats],
                [live[k].data for k in floats],
                [average[k].data for k in others],
                [live[k].data for k in others],
            )
            self._pairs_of = id(model)
        return self._cache

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards `model` (the unwrapped live model)."""
        averaged, live, copies, sources = self._pairs(model)
        torch._foreach_lerp_(averaged, live, 1.0 - self.current_decay())
        torch._foreach_copy_(copies, sources)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates, self.decay = int(state["num_updates"]), float(state["decay"])


__all__ = ["ExponentialMovingAverage"]
