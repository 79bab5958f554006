"""A collection of files to per-file results at the model's speed (`tag_collection`).

How it runs, and why:
- Decoding and resampling run in worker processes (`num_workers`, default `data.default_num_workers()`), each file
  by the package's one reader (`data.audio_files`: forward block reads, a soxr stream, the model's windows cut as the
  samples arrive), so the main process only pads windows and runs the model. 0 workers decode in the main process.
- A worker is given one file at a time (and one more in reserve, so it never waits): a free worker takes the next
  file, so an hour-long file occupies one worker while the others go on with the short ones.
- Windows reach the main process through one bounded queue and are batched across files: a batch holds the windows
  of whichever files are being decoded, so long files do not stall short ones and short files fill the batches.
  Memory stays bounded whatever the files' lengths: the queue's windows, one batch, one block per worker, and the
  per-window outputs of the files in flight (a few KB per window).
- Each file's window outputs are aggregated in the main process by `scoring.aggregate_windows`, as the one-file path
  (`files.file_outputs`) does; windows are padded as the extractor pads them there (windows that the extractor would
  pad to different lengths never share a batch), so the scores are the one-file path's, up to the float32 rounding
  of another batch composition (about 1e-7).
- A file that cannot be used (not audio, unreadable, empty, too short, NaN, a decoder that crashes its worker) is a
  result with its `error`; the run goes on. A worker that dies is replaced.
- Workers are forked where the platform can (Linux): they start at once and share the loaded collection. They never
  touch torch. On Linux they die with the main process (a killed run leaves no orphan decoding).

Results come as `TaggedFile`s, in the order they complete (`ordered=True`: in the collection's order), carrying the
per-window outputs with each window's start, for consumers of window scores (events, embeddings per window).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.audio_files import AudioFileError, open_audio, read_blocks, stream_windows, too_short
from ..data.loaders import default_num_workers
from ..windowing import WINDOWS_PER_BATCH, window_settings, window_starts
from .scoring import WindowOutputs, aggregate_windows, forward_windows

# A worker holds its current file and this many more: it never waits for the main process to hand it the next.
FILES_IN_RESERVE = 1
# How long the main process waits for a window before it scores a partial batch rather than idle.
PARTIAL_BATCH_WAIT_S = 0.05


@dataclass(frozen=True)
class DecodeSettings:
    """What a worker needs to cut a file into the model's windows (picklable)."""

    sampling_rate: int
    window: int
    hop: int
    min_samples: int
    block_frames: int | None = None


@dataclass
class TaggedFile:
    """One file's result. With `error` set, the file could not be tagged and the outputs are None.

    Per window (in order): `window_starts` (sample offsets at the model's `sampling_rate`; `window_start_s` in
    seconds), `window_samples` (real samples: the aggregation weights), `window_logits` (windows, classes),
    `window_audio_embeds` (windows, D), `window_pooled_output` (windows, U). Per file: `scores` (sigmoid, aggregated
    as the model aggregates a long clip), `audio_embeds` E_a and `pooled_output` (means weighted by real samples).
    """

    index: int
    key: str
    sampling_rate: int
    duration_s: float | None = None
    file_sampling_rate: int | None = None
    channels: int | None = None
    error: str | None = None
    window_starts: np.ndarray | None = None
    window_samples: np.ndarray | None = None
    window_logits: np.ndarray | None = None
    window_audio_embeds: np.ndarray | None = None
    window_pooled_output: np.ndarray | None = None
    scores: np.ndarray | None = None
    audio_embeds: np.ndarray | None = None
    pooled_output: np.ndarray | None = None

    @property
    def window_start_s(self) -> np.ndarray:
        return self.window_starts / self.sampling_rate

    @property
    def window_scores(self) -> np.ndarray:
        """Each window's sigmoid scores (windows, classes)."""
        return torch.from_numpy(self.window_logits).sigmoid().numpy()


# Messages from the decoding side, each a tuple whose first two items are (kind, worker):
#   ("window", worker, index, window)        the next window of file `index`
#   ("end", worker, index, info)             the file is decoded; info = (frames, file rate, channels, samples)
#   ("error", worker, index, reason, info)   the file cannot be used


def decode_messages(collection, index: int, settings: DecodeSettings, worker: int = 0) -> Iterator[tuple]:
    """The messages of one file: its windows as the package's reader cuts them, then its end, or its error."""
    key = collection[index]
    info = (None, None, None, None)
    try:
        with open_audio(collection.audio(index), key) as sound:
            info = (sound.frames, sound.samplerate, sound.channels, None)  # an error's duration: its header's
            frames = [0]
            blocks = _counted(read_blocks(sound, key, settings.block_frames), frames)
            windows = stream_windows(blocks, sound.samplerate, settings.sampling_rate, settings.window, settings.hop)
            count, samples = yield from _window_messages(windows, key, index, settings, worker)
            info = (frames[0], sound.samplerate, sound.channels, samples)
        if count == 0:  # an empty file, or one that resamples to nothing
            raise AudioFileError(key, too_short(0, settings.sampling_rate, settings.min_samples))
        yield ("end", worker, index, info)
    except AudioFileError as err:
        yield ("error", worker, index, err.reason, info)
    except Exception as err:  # noqa: BLE001 - whatever a decoder raises on a strange file, the run goes on
        yield ("error", worker, index, f"cannot be decoded ({type(err).__name__}: {err})", info)


def _window_messages(windows, key: str, index: int, settings: DecodeSettings, worker: int):
    """A message per window; returns (windows, the clip's samples at the model's rate)."""
    count = 0
    while True:
        try:
            window = next(windows)
        except StopIteration as stop:
            return count, stop.value
        if len(window) < settings.min_samples:  # only a whole file can be shorter than the window
            raise AudioFileError(key, too_short(len(window), settings.sampling_rate, settings.min_samples))
        count += 1
        yield ("window", worker, index, window)


def _counted(blocks: Iterator[np.ndarray], frames: list[int]) -> Iterator[np.ndarray]:
    for block in blocks:
        frames[0] += len(block)
        yield block


# ---------------------------------------------------------------------------------------------------------------
# The decoding side: in the main process, or in worker processes.


class InlineDecoder:
    """Decodes in the main process, one file after another (0 workers)."""

    def __init__(self, collection, settings: DecodeSettings):
        self.collection, self.settings = collection, settings
        self.todo: deque[int] = deque()
        self.current: Iterator[tuple] | None = None

    def submit(self, indices: Sequence[int]) -> None:
        self.todo.extend(indices)

    def next_message(self, wait: float) -> tuple | None:
        while True:
            if self.current is not None:
                message = next(self.current, None)
                if message is not None:
                    return message
            self.current = None
            if not self.todo:
                return None
            self.current = decode_messages(self.collection, self.todo.popleft(), self.settings)

    def idle(self) -> bool:
        return not self.todo and self.current is None

    def close(self) -> None:
        pass


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this worker when the main process dies (SIGKILL included)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before the line above
        os._exit(0)


def _worker_main(collection, settings: DecodeSettings, tasks, results, worker: int, parent: int) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    while (index := tasks.get()) is not None:
        for message in decode_messages(collection, index, settings, worker):
            results.put(message)


def _context():
    # Fork where there is one: the workers start at once and share the collection; they never use torch.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


class ProcessDecoder:
    """Decodes in `num_workers` processes; each holds at most 1 + FILES_IN_RESERVE files at a time."""

    def __init__(self, collection, settings: DecodeSettings, num_workers: int, queue_size: int):
        self.collection, self.settings = collection, settings
        self.context = _context()
        self.results = self.context.Queue(maxsize=queue_size)
        self.todo: deque[int] = deque()
        self.workers: list = [None] * num_workers
        self.tasks: list = [None] * num_workers
        self.held: list[deque[int]] = [deque() for _ in range(num_workers)]
        self.crashed: deque[tuple] = deque()
        for worker in range(num_workers):
            self._start(worker)

    def _start(self, worker: int) -> None:
        self.tasks[worker] = self.context.Queue()
        args = (self.collection, self.settings, self.tasks[worker], self.results, worker, os.getpid())
        process = self.context.Process(target=_worker_main, args=args, daemon=True, name=f"spa-decode-{worker}")
        process.start()
        self.workers[worker] = process

    def submit(self, indices: Sequence[int]) -> None:
        self.todo.extend(indices)
        self._hand_out()

    def _hand_out(self) -> None:
        for worker, held in enumerate(self.held):
            while self.todo and len(held) <= FILES_IN_RESERVE:
                held.append(self.todo.popleft())
                self.tasks[worker].put(held[-1])

    def next_message(self, wait: float) -> tuple | None:
        """The next message; None when none came within `wait` seconds (or nothing is left to decode)."""
        if self.crashed:
            return self.crashed.popleft()
        if not any(self.held):
            return None
        try:
            message = self.results.get(timeout=wait)
        except queue.Empty:
            self._check_workers()
            return self.crashed.popleft() if self.crashed else None
        self._done_with(message)
        return message

    def idle(self) -> bool:
        return not any(self.held) and not self.crashed

    def _done_with(self, message: tuple) -> None:
        if message[0] in ("end", "error"):
            held = self.held[message[1]]
            if held and held[0] == message[2]:
                held.popleft()
            self._hand_out()

    def _check_workers(self) -> None:
        """A worker that died (a decoder's crash) costs its current file, which becomes an error; its other files go
        back to the queue and a new worker takes its place."""
        for worker, process in enumerate(self.workers):
            if process.exitcode is None:
                continue
            self._drain()  # what it sent before it died is still valid
            held = self.held[worker]
            if held:
                index = held.popleft()
                reason = f"the decoder crashed (its worker process ended with exit code {process.exitcode})"
                self.crashed.append(("error", worker, index, reason, (None, None, None, None)))
            self.todo.extendleft(reversed(held))
            held.clear()
            self._start(worker)
            self._hand_out()

    def _drain(self) -> None:
        while True:
            try:
                message = self.results.get(timeout=0.2)
            except queue.Empty:
                return
            self._done_with(message)
            self.crashed.append(message)  # delivered in order, before the crash's own error

    def close(self) -> None:
        for worker, process in enumerate(self.workers):
            if process.is_alive():
                self.tasks[worker].put(None)
        for process in self.workers:
            process.join(timeout=1)
            if process.is_alive():
                process.terminate()
                process.join()
        for channel in [self.results, *self.tasks]:
            channel.cancel_join_thread()  # a full queue must not hold this process at exit
            channel.close()


# ---------------------------------------------------------------------------------------------------------------
# The main process: batching windows across files, aggregating each file.


@dataclass
class _InFlight:
    """A file whose windows are arriving: received windows' lengths, their outputs so far, its end."""

    lengths: list[int] = field(default_factory=list)
    outputs: dict[int, WindowOutputs] = field(default_factory=dict)
    info: tuple | None = None


class _Batcher:
    """Windows of many files, grouped by the length the extractor pads them to, scored a batch at a time."""

    def __init__(self, model, extractor, batch_size: int):
        self.model, self.extractor, self.batch_size = model, extractor, batch_size
        target = extractor.max_length_s
        self.target = round(target * extractor.sampling_rate) if target is not None else 0
        self.pending: dict[int, list[tuple[int, int, np.ndarray]]] = {}

    def add(self, index: int, position: int, window: np.ndarray) -> list | None:
        """Queues a window; returns a full batch's outputs when one is ready."""
        group = self.pending.setdefault(max(self.target, len(window)), [])
        group.append((index, position, window))
        return self.run(max(self.target, len(window))) if len(group) >= self.batch_size else None

    def run_largest(self) -> list | None:
        if not self.pending:
            return None
        return self.run(max(self.pending, key=lambda length: len(self.pending[length])))

    def run(self, length: int) -> list[tuple[int, int, WindowOutputs]]:
        group = self.pending.pop(length)
        outputs = forward_windows(self.model, self.extractor, [window for _, _, window in group])
        return [(index, position, outputs.rows(slice(row, row + 1))) for row, (index, position, _) in enumerate(group)]


def tag_collection(
    collection,
    model,
    extractor,
    indices: Sequence[int] | None = None,
    hop_s: float | None = None,
    aggregation: str | None = None,
    batch_size: int = WINDOWS_PER_BATCH,
    num_workers: int | None = None,
    ordered: bool = False,
    block_frames: int | None = None,
    idle: Callable[[], None] | None = None,
) -> Iterator[TaggedFile]:
    """Tags the items `indices` (default: all) of `collection` (`sources.FileCollection` or `DatasetCollection`):
    one `TaggedFile` per item, failures included, in the order they complete (`ordered`: in `indices`' order).

    Windows and aggregation are the model's (`hop_s`, `aggregation` override its config), as in `files.file_outputs`;
    `batch_size` windows of any files are scored at a time. `idle()` is called whenever nothing arrived for a moment
    (an output writes its buffered rows then). See the module docstring for the processes.
    """
    settings = window_settings(model.config, hop_s, aggregation)
    decode = DecodeSettings(extractor.sampling_rate, settings.length, settings.hop, model.spa.frontend.min_samples,
                            block_frames)  # fmt: skip
    indices = list(range(len(collection)) if indices is None else indices)
    workers = default_num_workers() if num_workers is None else num_workers
    if workers > 0:
        decoder = ProcessDecoder(collection, decode, workers, queue_size=max(2 * batch_size, 4 * workers))
    else:
        decoder = InlineDecoder(collection, decode)
    try:
        decoder.submit(indices)
        batcher = _Batcher(model, extractor, batch_size)
        results = _run(decoder, batcher, collection, decode, settings.aggregation, len(indices), idle)
        yield from _in_order(results, indices) if ordered else results
    finally:
        decoder.close()


def _run(decoder, batcher: _Batcher, collection, decode: DecodeSettings, aggregation: str, total: int, idle=None):
    """The main loop: messages in, batches scored, finished files out."""
    flying: dict[int, _InFlight] = {}
    finished = 0
    while finished < total:
        message = decoder.next_message(PARTIAL_BATCH_WAIT_S)
        if message is None:  # nothing arrived: score what is waiting rather than idle
            if idle is not None:
                idle()
            scored = batcher.run_largest()
            if scored is None and decoder.idle():  # a bug, never a file's fault
                raise RuntimeError(f"the decoders stopped after {finished} of {total} files")
        else:
            kind, _, index = message[:3]
            state = flying.setdefault(index, _InFlight())
            scored = None
            if kind == "window":
                state.lengths.append(len(message[3]))
                scored = batcher.add(index, len(state.lengths) - 1, message[3])
            elif kind == "end":
                state.info = message[3]
            else:
                del flying[index]  # its windows still queued are scored and dropped
                finished += 1
                yield _failed(collection, index, decode, message[3], message[4])
        for index, position, outputs in scored or ():
            if index in flying:
                flying[index].outputs[position] = outputs
        for index in [i for i, state in flying.items() if _complete(state)]:
            finished += 1
            yield _finish(collection, index, flying.pop(index), decode, aggregation)


def _complete(state: _InFlight) -> bool:
    return state.info is not None and len(state.outputs) == len(state.lengths)


def _failed(collection, index: int, decode: DecodeSettings, reason: str, info: tuple) -> TaggedFile:
    frames, rate, channels, _ = info
    duration = frames / rate if frames is not None and rate else None
    return TaggedFile(index, collection[index], decode.sampling_rate, duration, rate, channels, error=reason)


def _finish(collection, index: int, state: _InFlight, decode: DecodeSettings, aggregation: str) -> TaggedFile:
    frames, rate, channels, samples = state.info
    outputs = WindowOutputs.cat([state.outputs[position] for position in range(len(state.lengths))])
    starts = window_starts(samples, decode.window, decode.hop)
    if len(starts) != len(state.lengths):  # the reader and windowing disagree: a bug, never a file's fault
        raise RuntimeError(f"{collection[index]}: {len(state.lengths)} windows where window_starts gives {len(starts)}")
    scores, audio_embeds, pooled = aggregate_windows(outputs, state.lengths, aggregation)
    return TaggedFile(
        index, collection[index], decode.sampling_rate, frames / rate, rate, channels,
        window_starts=np.asarray(starts, dtype=np.int64), window_samples=np.asarray(state.lengths, dtype=np.int64),
        window_logits=outputs.logits.numpy(), window_audio_embeds=outputs.audio_embeds.numpy(),
        window_pooled_output=outputs.pooled_output.numpy(), scores=scores, audio_embeds=audio_embeds.numpy(),
        pooled_output=pooled.numpy(),
    )  # fmt: skip


def _in_order(results: Iterator[TaggedFile], indices: Sequence[int]) -> Iterator[TaggedFile]:
    """`results` in the order of `indices`: those that finish early wait for the ones before them."""
    waiting: dict[int, TaggedFile] = {}
    order = iter(indices)
    expected = next(order, None)
    for result in results:
        waiting[result.index] = result
        while expected is not None and expected in waiting:
            yield waiting.pop(expected)
            expected = next(order, None)


__all__ = ["DecodeSettings", "TaggedFile", "decode_messages", "tag_collection"]
