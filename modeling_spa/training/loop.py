"""One training epoch: accumulation, the step guard, the frozen backbone's steps, the weight average, loss sums kept on
the device and resumable mid-epoch."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data import stand_in_rows
from .checkpointing import save_checkpoint
from .guard import check_step
from .optimization import drop_gradients

LOSS_PARTS = ("loss", "bce_loss", "obce_loss", "ce_loss", "spa_loss", "spa_uniformity_loss", "spa_geometry_loss")


def train_epoch(accelerator, model, optimizer, scheduler, loader, state: dict, args, progress, extras: dict):
    """One epoch from `state` (resumable mid-epoch); returns the mean loss parts over the epoch's batches on all
    processes (those before a resume included), skipped clips and steps.

    Nothing is read back from the device but the gradient norm, once per optimizer step (`check_step`), and the
    loss sums at logging steps and checkpoints (`epoch_totals`): loss sums stay on the device, and bad clips are
    replaced in the batch rather than selected out (`stand_in_rows`), so the batch shape never changes. A step whose
    gradients are not finite is skipped and its losses are left out of the means. `extras`: the backbone's
    parameters and its frozen steps (their gradients are dropped then, see `freeze_groups`), and the weight average
    to update after each step.
    """
    epoch = state["epoch"]
    # A stream's batch sampler starts after the batches done by itself, without reading them again.
    loader = epoch_loader(accelerator, loader, epoch, 0 if extras["stream"] is not None else state["batches_in_epoch"])
    sums, batches = resumed_sums(accelerator, state)
    skipped, skipped_steps, window_ids = [], 0, []
    for batch in loader:
        state["batches_in_epoch"] += 1
        if "stream" in state:
            state["stream"]["batches"] += 1
        skipped += batch["skipped"]
        window_ids += batch["clip_ids"]
        any_valid = batch["valid"].any()
        rows = stand_in_rows(batch["valid"])
        with accelerator.accumulate(model):
            output = model(batch["input_values"][rows], batch["attention_mask"][rows], labels=batch["labels"][rows])
            # A batch of only bad clips still steps, with zero loss: every process must run the same collectives.
            accelerator.backward(output.loss * any_valid)
            if accelerator.sync_gradients:
                if state["completed_steps"] < extras["frozen_steps"]:
                    drop_gradients(extras["backbone_params"])
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                if check_step(accelerator, model, grad_norm, window_ids, state):
                    optimizer.step()
                    if extras["ema"] is not None:
                        extras["ema"].update(extras["unwrapped"])
                else:
                    skipped_steps += 1
                window_ids = []
            scheduler.step()
            optimizer.zero_grad()
        finite = torch.isfinite(output.loss.detach()) & any_valid.to(output.loss.device)
        for name in LOSS_PARTS:
            if getattr(output, name) is not None:
                part = torch.where(finite, getattr(output, name).detach(), 0.0)
                sums[name] = sums.get(name, 0.0) + part
        batches = batches + finite
        if not accelerator.sync_gradients:
            continue
        state["completed_steps"] += 1
        progress.update(1)
        if state["completed_steps"] % args.logging_steps == 0:
            means = epoch_means(epoch_totals(accelerator, sums, batches))
            progress.set_postfix(epoch=epoch, loss=f"{means['loss']:.4f}")
            accelerator.log({f"train/{k}": v for k, v in means.items()} | learning_rates(optimizer, "lr/"),
                            step=state["completed_steps"])  # fmt: skip
        if state["completed_steps"] % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, Path(args.output_dir), state, args.keep_checkpoints, extras["stream"],
                            epoch_totals(accelerator, sums, batches))  # fmt: skip
        if state["completed_steps"] >= (args.max_steps or float("inf")):
            break
    return epoch_means(epoch_totals(accelerator, sums, batches)), skipped, skipped_steps


def epoch_loader(accelerator, loader, epoch: int, batches_done: int = 0):
    """The prepared training loader set to `epoch`; resumed mid-epoch (`batches_done` > 0), the interrupted run's
    order minus the batches it did."""
    # The samplers' order depends on (seed, epoch) only. Set on the prepared loader first: under DDP, a skipping
    # loader's set_epoch does not reach the sampler (Accelerate's BatchSamplerShard hides it), which it shares.
    loader.set_epoch(epoch)
    if batches_done:
        loader = accelerator.skip_first_batches(loader, batches_done)
        loader.set_epoch(epoch)  # its own iteration count, which it sets its sampler to (single process)
    return loader


def epoch_totals(accelerator, sums: dict[str, torch.Tensor], batches) -> dict[str, float]:
    """The loss sums of the epoch so far and the batches they cover (`batches`), over all processes: a collective,
    which every process reaches at the same step. One read from the device."""
    names = list(sums)
    device = accelerator.device
    values = torch.stack([sums[name].float() for name in names] + [torch.as_tensor(batches, device=device).float()])
    return dict(zip([*names, "batches"], accelerator.reduce(values, reduction="sum").tolist(), strict=True))


def epoch_means(totals: dict[str, float]) -> dict[str, float]:
    """Each loss part's mean over the epoch's batches so far (`epoch_totals`)."""
    return {name: value / max(totals["batches"], 1) for name, value in totals.items() if name != "batches"}


def resumed_sums(accelerator, state: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor | int]:
    """The loss sums and batch count an epoch starts from: none at its start; resumed mid-epoch, the totals of the
    interrupted run's batches (its checkpoint's `epoch_totals`), so that the epoch's mean covers all its batches. The
    first process carries them, the others start at zero with the same parts (the totals add up over processes)."""
    totals = state.get("epoch_sums") if state["batches_in_epoch"] else None
    if not totals:
        return {}, 0
    share = 1.0 if accelerator.is_main_process else 0.0
    sums = {name: torch.tensor(value * share, device=accelerator.device) for name, value in totals.items()}
    return sums, sums.pop("batches")


def learning_rates(optimizer, prefix: str = "") -> dict[str, float]:
    """The current learning rate of each parameter group, by the group's name."""
    return {f"{prefix}{group['name']}": group["lr"] for group in optimizer.param_groups}


def epoch_summary(state: dict, seconds: float, losses: dict, skipped: list, skipped_steps: int, evaluated: dict,
                  optimizer) -> dict:  # fmt: skip
    """One `history.json` entry: the epoch's training losses, skips, the eval split's metrics (of the last weights,
    and the average's mAP and OmAP when one is kept) and each parameter group's learning rate. A collective: the
    skipped clips are gathered from every process."""
    from accelerate.utils import gather_object

    return {
        "epoch": state["epoch"],
        "step": state["completed_steps"],
        "seconds": round(seconds, 1),
        **{f"train_{name}": value for name, value in losses.items()},
        "train_skipped_clips": len({clip for clip, _ in gather_object(skipped)}),
        "train_skipped_steps": skipped_steps,  # equal on every process: the gradients are all-reduced
        **{f"eval_{k}": v for k, v in evaluated["model"].items() if k != "omap_per_lambda"},
        **{f"eval_ema_{k}": evaluated["model_ema"][k] for k in ("map", "omap") if "model_ema" in evaluated},
        "lr": learning_rates(optimizer),  # each parameter group's, at the epoch's last step
    }


def report_epoch(accelerator, summary: dict, state: dict, logging_steps: int, skipped: list) -> None:
    """Log the epoch's summary to the trackers and the console, and name the bad clips this process skipped."""
    from .trackers import tracker_scalars

    # The step log recorded the rates of this step already when it fell on a logging step: no duplicate point.
    logged_rates = state["completed_steps"] % logging_steps == 0
    accelerator.log(tracker_scalars(summary, skip=("lr",) if logged_rates else ()), step=state["completed_steps"])
    accelerator.print(json.dumps(summary))
    if skipped:
        named = ", ".join(f"{clip} ({reason})" for clip, reason in skipped[:10])
        print(f"[process {accelerator.process_index}] skipped {len(skipped)} bad clip(s): {named}", flush=True)
