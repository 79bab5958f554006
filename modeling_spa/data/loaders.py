"""DataLoaders for AudioSet-format splits under Accelerate: the settings every loader of a run shares, and the
evaluation loader of a split, downloaded or streamed (`recipes/train.py`, `recipes/evaluate.py`).
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader

from .collate import AudioSetCollator
from .streaming import Rows, StridedStreamBatchSampler


def own_generator(seed: int) -> torch.Generator:
    """A loader's own generator: starting an epoch (a DataLoader iterator draws its workers' base seed, and a
    shuffling sampler its order) then never draws from the global RNG that dropout uses, so a resumed run (whose RNG
    state comes from its checkpoint) continues exactly like an uninterrupted one, with any number of workers."""
    return torch.Generator().manual_seed(seed)


def loader_options(num_workers: int | None, device: torch.device) -> dict:
    """Workers (`default_num_workers()` when None; persistent: started once for the run, not every epoch) and pinned
    memory when batches go to a CUDA device (the copy to the device is then asynchronous)."""
    workers = default_num_workers() if num_workers is None else num_workers
    pin = torch.device(device).type == "cuda"
    return {"num_workers": workers, "persistent_workers": workers > 0, "pin_memory": pin}


def on_device(accelerator, loader: DataLoader) -> DataLoader:
    """A loader that reads this process's share by itself, prepared to move its batches to the device only
    (`accelerator.prepare` would shard it across the processes a second time)."""
    from accelerate.data_loader import prepare_data_loader

    return prepare_data_loader(loader, accelerator.device, num_processes=1, process_index=0, put_on_device=True)


def evaluation_loader(
    accelerator,
    data,
    collator: AudioSetCollator,
    batch_size: int,
    options: dict,
    seed: int = 0,
    size: int | None = None,
) -> DataLoader:
    """The prepared loader of an evaluation split, in its order: `data` a map-style dataset (sharded by Accelerate,
    which repeats a few clips to even out the last batch and `gather_for_metrics` drops them), or a stream of `size`
    clips (each process takes every n-th clip; padding rows even the batches out and are dropped after the gather)."""
    if size is None:
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collator,
                            generator=own_generator(seed), **options)  # fmt: skip
        return accelerator.prepare(loader)
    rows = StridedStreamBatchSampler(data, size, batch_size, accelerator.num_processes, accelerator.process_index)
    loader = DataLoader(Rows(len(rows) * batch_size), batch_sampler=rows, collate_fn=collator,
                        generator=own_generator(seed), **options)  # fmt: skip
    return on_device(accelerator, loader)


__all__ = ["evaluation_loader", "loader_options", "on_device", "own_generator"]


def default_num_workers(processes_per_node: int | None = None) -> int:
    """DataLoader workers per process: the cores this process may use, shared among the node's processes, minus one
    for the process itself, at most 8 (decoding scales with cores; beyond 8 the main process's feeding and the
    shared memory traffic dominate). 0 (decode in the main process) where a process has a single core.

    `processes_per_node` defaults to the launcher's LOCAL_WORLD_SIZE (torchrun, `accelerate launch`), else 1.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes = processes_per_node or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(8, cores // max(processes, 1) - 1))
