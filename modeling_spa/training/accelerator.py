"""The Accelerator of a run (mixed precision, compilation, trackers), and its shutdown in an order that cannot
deadlock."""

from __future__ import annotations

import gc
import os

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration


def default_mixed_precision(args) -> str | None:
    """--mixed_precision if given; else a launcher's choice other than "no"; else bf16 on a GPU that has it, or no.

    `accelerate launch` always passes a value (its default is "no"), so its "no" cannot be told from no choice:
    to train in float32 on a GPU, pass `--mixed_precision no` to this script.
    """
    if args.mixed_precision is not None:
        return args.mixed_precision
    if os.environ.get("ACCELERATE_MIXED_PRECISION", "no") != "no":
        return None  # Accelerator reads the launcher's
    gpu = torch.cuda.is_available() and not args.cpu and torch.cuda.is_bf16_supported()
    return "bf16" if gpu else "no"


def make_accelerator(args) -> Accelerator:
    return Accelerator(
        cpu=args.cpu,
        mixed_precision=default_mixed_precision(args),
        # Compiled after DDP wrapping, in `prepare`; None leaves the choice to `accelerate launch --dynamo_backend`.
        dynamo_backend="inductor" if args.torch_compile else None,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to.split(","),
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )


def shut_down(accelerator: Accelerator) -> None:
    """End training and tear the process group down explicitly, in an order that cannot deadlock.

    DDP's C++ Reducer holds the process group. Where it is the group's last owner, the group's destructor runs when
    Python frees the Reducer, with the GIL held, and joins gloo's worker threads, while a worker may need the GIL to
    free a tensor of the last collective: a rank that never exits after "Saved the model" (pytorch issue 56297). So
    every reference to the wrapped model goes first (the group, still registered, stays alive), and the group is
    destroyed last, through its own binding, which releases the GIL while it joins.
    """
    accelerator.free_memory()
    gc.collect()
    accelerator.end_training()  # trackers, then destroy_process_group()
