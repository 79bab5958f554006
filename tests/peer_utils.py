"""Helpers for the equivalence tests against the peers' own code (DESIGN §8)."""

import torch
from torch import nn


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights where default initialisation hides differences: every parameter, BatchNorm running statistics
    and affine parameters, LayerNorm affine parameters, relative-position tables. With default init (unit norms,
    zero biases, running stats 0/1) outputs are nearly constant, and a comparison proves nothing."""
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if not tensor.is_floating_point():
            continue
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64).to(tensor.dtype)
        if name.endswith("running_var"):
            tensor.copy_(0.5 + noise.abs())  # positive, away from 0
        elif name.endswith(("running_mean", "bias")):
            tensor.copy_(0.1 * noise)
        elif name.endswith("weight") and tensor.dim() == 1:  # norm scales
            tensor.copy_(1.0 + 0.2 * noise)
        else:
            fan_in = tensor[0].numel() if tensor.dim() > 1 else tensor.numel()
            tensor.copy_(noise / max(fan_in, 1) ** 0.5)
    return module.eval()
