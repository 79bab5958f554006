"""The guard of every optimizer step: gradients that are not finite are skipped, reported and, when they persist,
stop the run."""

from __future__ import annotations

import torch

MAX_NON_FINITE_STEPS = 3  # in a row: then the data or the learning rate is broken, and the run stops


class NonFiniteLossError(RuntimeError):
    """Training kept producing non-finite gradients; the weights are those of the last finite step."""


def check_step(accelerator, model, grad_norm: torch.Tensor, clip_ids: list[str], state: dict) -> bool:
    """Whether the optimizer may step: False, reported with the step's clip ids, when the gradients are not finite.

    Gradients are all-reduced before this point, so every process sees the same norm and takes the same decision
    (no extra collective). One host read per optimizer step: the price of never stepping on NaN. The forward pass
    may already have written NaN into BatchNorm statistics; then no later step can recover, and the run stops.
    """
    if torch.isfinite(grad_norm):
        state["non_finite_in_a_row"] = 0
        return True
    state["non_finite_in_a_row"] = state.get("non_finite_in_a_row", 0) + 1
    step = state["completed_steps"] + 1
    print(f"[process {accelerator.process_index}] skipped optimizer step {step}: non-finite gradients "
          f"(norm {grad_norm.item()}); clips in the step: {', '.join(clip_ids)}", flush=True)  # fmt: skip
    poisoned = [name for name, b in model.named_buffers() if b.is_floating_point() and not torch.isfinite(b).all()]
    if poisoned or state["non_finite_in_a_row"] >= MAX_NON_FINITE_STEPS:
        cause = (
            f"the forward pass wrote non-finite values into the buffers {poisoned[:3]}"
            if poisoned
            else f"{MAX_NON_FINITE_STEPS} optimizer steps in a row had non-finite gradients"
        )
        raise NonFiniteLossError(
            f"Training stopped at step {step}: {cause} (clips of the last step: {', '.join(clip_ids)}). Check those "
            "clips (e.g. extreme sample values) and the learning rate; the weights were not updated by the skipped "
            "steps, and the last checkpoint holds the state before them."
        )
    return False
