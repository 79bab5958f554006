"""Streamed AudioSet-format splits (`recipes/train.py --streaming`): read as they are used, never downloaded whole.

How a streamed run reads its data, and why:
- `open_stream`: `datasets.load_dataset(..., streaming=True)` (a Hub id, a parquet folder or file; a `save_to_disk`
  folder through `to_iterable_dataset`), audio cast to `Audio(decode=False)` (datasets 5 decodes only through
  torchcodec), and only the columns the collator reads.
- Order: `shuffle(seed=seed, buffer_size=...)` reshuffles the order of the files every pass (`set_epoch(pass)`) and
  mixes rows through a buffer of `buffer_size` clips (held in memory: their encoded audio).
- Processes: `datasets.distributed.split_dataset_by_node`: each process reads its own files when their number divides
  by the number of processes, else every process reads the stream and keeps every n-th row (datasets' rule).
  Not Accelerate's handling of an IterableDataset: by default it dispatches (process 0 reads and decodes every batch
  of every process on its own workers, then sends the tensors), and without dispatching it shards by files without
  evening out the processes' batch counts, so a process that runs out first leaves the others waiting in DDP.
- Epochs: every process takes the same number of batches per epoch, `batches_per_epoch` (so DDP's collectives
  match): ceil(epoch_length / (processes x batch size)), the epoch length being the split's size when it is known,
  else `--epoch_length`. A process reads its share as an endless sequence of passes, each reshuffled, and an epoch
  continues where the last one stopped: passes and epochs line up only when the share divides into whole batches.
- Reading in the main process (`StreamBatchSampler`: the DataLoader's batch sampler yields the rows themselves),
  decoding in the DataLoader workers (the collator): the batches do not depend on the number of workers, and the
  read position of each batch is known exactly.
- Resuming: the read position (pass, rows read in it) of each process after the last batch a checkpoint covers is
  saved with it; the resumed process re-reads that pass up to the position, without decoding anything, and goes on
  with the very batches the interrupted run would have taken. `IterableDataset.state_dict()` would restart without
  re-reading, but it loses the rows in the shuffle buffer (datasets' documentation), so the run would not continue
  as it would have; the price of exactness is re-reading part of one pass (bytes, not decoding).
- Evaluation (`StridedStreamBatchSampler`): in order, without shuffling; each process takes every n-th row and all
  take the same number of batches, the last ones filled with padding rows (masked, not clips).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice

import torch
from torch.utils.data import Sampler

from .collate import PADDING_ROW
from .loading import keep_audio_undecoded
from .splits import SplitSpec, select

COLUMNS = ("video_id", "audio", "labels")


@dataclass(frozen=True)
class StreamPosition:
    """Where a process is in its endless stream: its pass (reshuffled with `set_epoch(pass_index)`), and the rows it
    has read in that pass."""

    pass_index: int = 0
    rows: int = 0


def open_stream(source: str, split: str, config_name: str | None = None, columns: Sequence[str] = COLUMNS):
    """A split as a `datasets.IterableDataset` of the named columns (those it has), audio undecoded."""
    import datasets

    if os.path.isfile(os.path.join(source, "dataset_dict.json")):
        stream = datasets.load_from_disk(source)[split].to_iterable_dataset()
    elif os.path.isfile(os.path.join(source, "state.json")):
        stream = datasets.load_from_disk(source).to_iterable_dataset()
    elif source.endswith(".parquet"):
        stream = datasets.load_dataset(
            "parquet", data_files=source, split="train", streaming=True, columns=list(columns)
        )
    else:
        # `columns` reaches the parquet reader: unread columns are never fetched.
        stream = datasets.load_dataset(source, config_name, split=split, streaming=True, columns=list(columns))
    if stream.features is not None:
        stream = stream.select_columns([name for name in columns if name in stream.features])
    return keep_audio_undecoded(stream)


def open_part(source: str, spec: SplitSpec, config_name: str | None = None, columns: Sequence[str] = COLUMNS):
    """The stream of `spec`: its dataset split, restricted to one side of the validation hold-out if it has one."""
    needed = list(columns) + (["video_id"] if spec.holdout and "video_id" not in columns else [])
    return select(open_stream(source, spec.source, config_name, needed), spec)


def training_stream(stream, seed: int, buffer_size: int, process_index: int = 0, num_processes: int = 1):
    """`stream` shuffled (files every pass, rows through the buffer) and split across processes."""
    from datasets.distributed import split_dataset_by_node

    if buffer_size < 1:
        raise ValueError(f"The shuffle buffer must hold at least 1 clip, got {buffer_size}.")
    stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
    return split_dataset_by_node(stream, rank=process_index, world_size=num_processes)


def metadata_size(source: str, split: str, config_name: str | None = None) -> int | None:
    """The rows of a whole split as its metadata gives them, without reading it: `DatasetInfo.splits`, else the row
    counts in the footers of its parquet files (local or on the Hub); None when neither is available."""
    import datasets

    if os.path.isfile(os.path.join(source, "dataset_dict.json")):
        return len(datasets.load_from_disk(source)[split])
    if os.path.isfile(os.path.join(source, "state.json")):
        return len(datasets.load_from_disk(source))
    if source.endswith(".parquet"):
        return _parquet_rows([source])
    builder = datasets.load_dataset_builder(source, config_name)
    if builder.info.splits and split in builder.info.splits and builder.info.splits[split].num_examples:
        return int(builder.info.splits[split].num_examples)
    files = (builder.config.data_files or {}).get(split)
    if files and all(str(name).endswith(".parquet") for name in files):
        return _parquet_rows(files)
    return None


def _parquet_rows(files: Sequence[str]) -> int:
    import fsspec
    import pyarrow.parquet as pq

    total = 0
    for name in files:
        with fsspec.open(str(name), "rb") as handle:  # hf:// paths too: only the footer is read
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def part_size(source: str, spec: SplitSpec, config_name: str | None = None) -> int:
    """Clips in the part `spec`: the split's metadata for a whole split, else one pass over its clip ids."""
    if spec.holdout is None and (size := metadata_size(source, spec.source, config_name)) is not None:
        return size
    return sum(1 for _ in open_part(source, spec, config_name, columns=("video_id",)))


def part_labels(source: str, spec: SplitSpec, config_name: str | None = None) -> tuple[list[str], list[list[str]]]:
    """The clip ids and label lists of the part `spec`, in stream order, from those two columns only."""
    ids, labels = [], []
    for row in open_part(source, spec, config_name, columns=("video_id", "labels")):
        ids.append(str(row["video_id"]))
        labels.append(list(row["labels"]))
    return ids, labels


def batches_per_epoch(epoch_length: int, batch_size: int, num_processes: int = 1) -> int:
    """The batches every process takes in an epoch of `epoch_length` clips over all processes."""
    if epoch_length < 1:
        raise ValueError(f"An epoch needs at least one clip, got {epoch_length}.")
    return _ceil_div(epoch_length, batch_size * num_processes)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class StreamReader:
    """A process's rows as an endless sequence of passes over its share of a stream, from a `StreamPosition`.

    Each pass starts with `stream.set_epoch(pass_index)` (a new shuffle); a pass that starts mid-way re-reads and
    drops the rows before the position. `position` is the position after the last row returned.
    """

    def __init__(self, stream, position: StreamPosition = StreamPosition()):
        self.stream, self.position = stream, position
        self._rows: Iterator[dict] | None = None

    def _start_pass(self) -> None:
        self.stream.set_epoch(self.position.pass_index)
        self._rows = iter(self.stream)
        skipped = sum(1 for _ in islice(self._rows, self.position.rows))
        if skipped < self.position.rows:
            raise ValueError(
                f"Cannot resume the stream at row {self.position.rows} of pass {self.position.pass_index}: the pass "
                f"has {skipped} rows for this process. Resume with the data, seed, shuffle buffer, batch size and "
                "number of processes of the interrupted run."
            )

    def read(self) -> dict:
        if self._rows is None:
            self._start_pass()
        for _ in range(2):
            row = next(self._rows, None)
            if row is not None:
                self.position = replace(self.position, rows=self.position.rows + 1)
                return row
            if self.position.rows == 0:
                break
            self.position = StreamPosition(self.position.pass_index + 1, 0)  # the pass is over: reshuffle
            self._start_pass()
        raise ValueError("The stream of this process is empty: it has no clip to train on.")

    def close(self) -> None:
        """Let go of the open pass (its file readers); the next `read` reopens it at `position`."""
        close = getattr(self._rows, "close", None)
        if close is not None:
            close()
        self._rows = None


class StreamBatchSampler(Sampler[list[dict]]):
    """The training DataLoader's batch sampler for a stream: `batches_per_epoch` batches of `batch_size` rows per
    epoch, read by a `StreamReader` in the main process; the DataLoader hands each batch of rows to a worker, whose
    collator decodes it (use `Rows` as the DataLoader's dataset).

    A resumed run passes the batches the run had taken from the stream (`batches_done`) and those of the current
    epoch (`batches_in_epoch`): its first epoch is then the rest of that one. `position_after(n)` is the read
    position after the run's first n batches, for checkpoints: the DataLoader reads ahead of the batch the training
    loop is at, so the position after every batch it has taken is kept until a checkpoint asks for it.
    """

    def __init__(
        self,
        reader: StreamReader,
        batch_size: int,
        batches_per_epoch: int,
        batches_done: int = 0,
        batches_in_epoch: int = 0,
    ):
        self.reader, self.batch_size, self.batches_per_epoch = reader, batch_size, batches_per_epoch
        self._produced, self._done_in_epoch = batches_done, batches_in_epoch
        self._positions = {batches_done: reader.position}

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[dict]]:
        todo, self._done_in_epoch = self.batches_per_epoch - self._done_in_epoch, 0
        for _ in range(todo):
            batch = [self.reader.read() for _ in range(self.batch_size)]
            self._produced += 1
            self._positions[self._produced] = self.reader.position
            yield batch

    def position_after(self, batches: int) -> StreamPosition:
        if batches not in self._positions:
            raise ValueError(f"No read position for batch {batches}: the stream has produced {self._produced}.")
        position = self._positions[batches]
        self._positions = {n: p for n, p in self._positions.items() if n >= batches}
        return position


class StridedStreamBatchSampler(Sampler[list[dict]]):
    """Evaluation batches of a stream of `size` clips, in its order: this process takes every `processes`-th row from
    `index`; every process yields the same number of batches, the last ones completed with padding rows
    (`PADDING_ROW`: silent, masked, never counted as clips), so each clip is scored exactly once.

    (Not named num_processes/process_index: Accelerate reads those of a batch sampler as its own sharding.)
    """

    def __init__(self, stream, size: int, batch_size: int, processes: int = 1, index: int = 0):
        self.stream, self.size, self.batch_size = stream, size, batch_size
        self.processes, self.index = processes, index

    def __len__(self) -> int:
        return _ceil_div(_ceil_div(self.size, self.processes), self.batch_size)

    def __iter__(self) -> Iterator[list[dict]]:
        rows = _Counted(iter(self.stream))
        mine = islice(rows, self.index, self.size, self.processes)
        for _ in range(len(self)):
            batch = list(islice(mine, self.batch_size))
            yield batch + [PADDING_ROW] * (self.batch_size - len(batch))
        # Every process reads the whole stream, so all of them find a wrong size, at the same point.
        for _ in rows:
            pass
        if rows.count != self.size:
            raise ValueError(
                f"The stream has {rows.count} clips, not the {self.size} its size said: evaluation stopped."
            )


class _Counted:
    """An iterator that counts the items taken from it."""

    def __init__(self, items: Iterator):
        self.items, self.count = items, 0

    def __iter__(self) -> _Counted:
        return self

    def __next__(self):
        item = next(self.items)
        self.count += 1
        return item


class Rows(torch.utils.data.Dataset):
    """The dataset of a DataLoader whose batch sampler yields rows: each "index" is the row itself."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, row: dict) -> dict:
        return row

    def __getitems__(self, rows: list[dict]) -> list[dict]:
        return rows


__all__ = [
    "COLUMNS",
    "Rows",
    "StreamBatchSampler",
    "StreamPosition",
    "StreamReader",
    "StridedStreamBatchSampler",
    "batches_per_epoch",
    "metadata_size",
    "open_part",
    "open_stream",
    "part_labels",
    "part_size",
    "training_stream",
]
