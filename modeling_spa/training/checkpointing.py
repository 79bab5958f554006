"""Checkpoints of a training run: Accelerate states written atomically, rotated, found again to resume; a streamed
run's read positions."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import gather_object

from ..data.streaming import StreamBatchSampler


def stream_record(data_args, args, accelerator: Accelerator, plan: dict, epoch_length: int) -> dict:
    """What a streamed run's order depends on: a resumed run must read the stream with the same values."""
    return {
        "dataset": data_args.dataset,
        "dataset_config": data_args.dataset_config,
        "train": plan["train"].describe(),
        "seed": args.seed,
        "shuffle_buffer": data_args.shuffle_buffer,
        "batch_size": args.batch_size,
        "num_processes": accelerator.num_processes,
        "epoch_length": epoch_length,
    }


def resumed_stream(saved: dict | None, current: dict, explicit_length: int | None) -> dict:
    """The stream record of a resumed run: the checkpoint's, after checking that nothing it depends on changed."""
    if saved is None:
        raise ValueError("--streaming: the checkpoint was written by a run that did not stream; resume it without.")
    current = {**current, "epoch_length": saved["epoch_length"] if explicit_length is None else explicit_length}
    changed = [key for key in current if saved.get(key) != current[key]]
    if changed:
        details = ", ".join(f"{key}: {saved.get(key)!r} then, {current[key]!r} now" for key in changed)
        raise ValueError(f"Cannot resume this streamed run: the stream would not be read the same way ({details}).")
    return saved


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    found = [
        p
        for p in (output_dir / "checkpoints").glob("step_*")
        if re.fullmatch(r"step_\d+", p.name) and (p / "trainer_state.json").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    state: dict,
    keep: int,
    stream: StreamBatchSampler | None = None,
    epoch_sums: dict[str, float] | None = None,
) -> None:
    """save_state into a temporary folder, then rename: a run killed while saving keeps its last checkpoint.

    A streamed run also records, in trainer_state.json, each process's read position after the batches the state
    covers (`stream.positions`, in process order): a resumed run continues reading there. Mid-epoch, `epoch_sums`
    (`epoch_totals`) are the epoch's loss sums so far, from which a resumed run continues its epoch mean.
    """
    state["epoch_sums"] = epoch_sums
    if stream is not None:
        position = stream.position_after(state["stream"]["batches"])
        state["stream"]["positions"] = gather_object([[position.pass_index, position.rows]])
    final = output_dir / "checkpoints" / f"step_{state['completed_steps']}"
    partial = final.with_name(final.name + ".partial")
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()  # every process has written its RNG state before the folder is renamed
    if accelerator.is_main_process:
        (partial / "trainer_state.json").write_text(json.dumps(state, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in checkpoint_dirs(output_dir)[: -max(keep, 1)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def resolve_resume(output_dir: Path, resume: str | None) -> Path | None:
    if resume is None:
        return None
    if resume == "latest":
        found = checkpoint_dirs(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint written by this script (no trainer_state.json).")
    return path
