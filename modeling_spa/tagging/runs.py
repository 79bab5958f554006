"""A tagging run: a collection through the pipeline into its outputs (a table, embeddings), resumable, with a progress
bar, alone or as one of several processes (`accelerate launch`).

- Resuming: each output is the record of what is done (`tables`); the files recorded in every output are skipped,
  a file missing from one output is tagged again and written only where it is missing.
- Processes: under `accelerate launch` (or torchrun) process r of n takes the files r, r + n, r + 2n, ... of the
  collection, writes its own parts of the outputs, and the main process merges them in the collection's order when
  all are done, so n processes write the table one process writes.
- Failures are rows with their error, never a stopped run; the summary counts them over the whole table.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .pipeline import TaggedFile, tag_collection


@dataclass(frozen=True)
class Processes:
    """This process among those tagging a collection together: its rank, their number, and their barrier."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, size: int) -> list[int]:
        """This process's items of a collection of `size`: every `world`-th from its rank (strided, so each process
        gets long and short files alike)."""
        return list(range(self.rank, size, self.world))


def launched_processes(cpu: bool) -> Processes:
    """The processes of an `accelerate launch` / torchrun run (its process group started here), else one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    return Processes(state.process_index, state.num_processes, state.wait_for_everyone)


@dataclass
class RunSummary:
    """What a run did (`tagged`, `failed`: this process, this run; `skipped`: already recorded) and, on the main
    process, what the finished outputs hold (`rows`, `failed_rows`: all processes, all runs)."""

    tagged: int = 0
    failed: int = 0
    skipped: int = 0
    audio_s: float = 0.0
    elapsed_s: float = 0.0
    rows: int | None = None
    failed_rows: int | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def any_failed(self) -> bool:
        return bool(self.failed or self.failed_rows)


def run_tagging(
    collection,
    model,
    extractor,
    outputs: Sequence,
    processes: Processes = Processes(),
    values: Callable[[TaggedFile], np.ndarray] | None = None,
    progress: bool = True,
    **pipeline,
) -> RunSummary:
    """Tags this process's share of `collection` into `outputs` (objects with `start`, `write(result, values)`,
    `due`, `close` and `finish`: `TableOutput`, `embeddings.EmbeddingOutput`), skipping what they already record;
    the main process then finishes them. `values(result)`: what a table ranks instead of the scores (zero-shot cosines).
    Each failure is named on stderr as it happens; `pipeline` goes to `pipeline.tag_collection`."""
    recorded = [output.start() for output in outputs]
    processes.barrier()  # every process has read the record before any writes to it
    share = processes.share(len(collection))
    todo = [i for i in share if not all((collection[i],) in done for done in recorded)]
    summary = RunSummary(skipped=len(share) - len(todo))
    started = time.monotonic()

    def idle() -> None:  # a stalled file must not hold back the rows already tagged
        for output in outputs:
            if output.due():
                output.close()

    try:
        with _ProgressBar(len(todo), progress and processes.main, processes) as bar:
            for result in tag_collection(collection, model, extractor, indices=todo, idle=idle, **pipeline):
                for output, done in zip(outputs, recorded, strict=True):
                    if (result.key,) not in done:
                        output.write(result, values(result) if values is not None and result.error is None else None)
                if (failure := _count(summary, result)) is not None:
                    bar.write(failure)
                bar.advance(result, summary, time.monotonic() - started)
    finally:  # interrupted too (Ctrl-C): what is buffered is written, so a restart does not tag it again
        for output in outputs:
            output.close()
    summary.elapsed_s = time.monotonic() - started
    processes.barrier()  # every process has closed its parts
    if processes.main:
        finished = [output.finish() for output in outputs]
        everything = {key: failed for record in finished for key, failed in record.items()}
        summary.rows, summary.failed_rows = len(everything), sum(everything.values())
    return summary


def _count(summary: RunSummary, result: TaggedFile) -> str | None:
    """Counts `result`; returns the line naming it when it failed."""
    if result.error is None:
        summary.tagged += 1
        summary.audio_s += result.duration_s or 0.0
        return None
    summary.failed += 1
    summary.failures.append(f"{result.key}: {result.error}")
    return f"error: {result.key}: {result.error}"


class TableOutput:
    """A table of one row per file (`rows.TableLayout`) as an output of `run_tagging`."""

    def __init__(self, path, layout, order: Sequence[str] = (), rank: int = 0, world: int = 1):
        from .tables import Table

        self.layout = layout
        self.table = Table(path, layout.columns(), ("file",), order, rank, world)

    def start(self) -> dict[tuple, bool]:
        return self.table.start()

    def write(self, result: TaggedFile, values: np.ndarray | None = None) -> None:
        self.table.write(self.layout.row(result, values))

    def due(self) -> bool:
        return self.table.due()

    def close(self) -> None:
        self.table.close()

    def finish(self) -> dict[tuple, bool]:
        return self.table.finish()


class _ProgressBar:
    """tqdm over files, with the audio hours tagged per second; nothing when disabled."""

    def __init__(self, total: int, enabled: bool, processes: Processes):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            where = f" (process 0 of {processes.world}: its share)" if processes.world > 1 else ""
            self.bar = tqdm(total=total, unit="file", desc=f"tagging{where}", file=sys.stderr, smoothing=0.1)
        self.shown = 0.0

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def advance(self, result: TaggedFile, summary: RunSummary, elapsed: float) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if elapsed - self.shown >= 0.5 or self.bar.n == self.bar.total:
            self.shown = elapsed
            hours = summary.audio_s / 3600
            speed = summary.audio_s / max(elapsed, 1e-9)
            self.bar.set_postfix_str(f"{hours:.3f} h of audio, {speed / 3600:.4f} h/s ({speed:.0f}x real time)",
                                     refresh=False)  # fmt: skip

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)


__all__ = ["Processes", "RunSummary", "TableOutput", "launched_processes", "run_tagging"]
