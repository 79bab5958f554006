"""Reading audio files: the package's one reader, exact and streamed, and the windows of a file.

Opened with `open_audio`, a file is decoded forward in blocks (`read_blocks`; seeking only where asked,
`seek_frame`), which join to exactly the whole-file decode in every format soundfile reads (see `_ForwardSoundFile`
for the MP3 decoder that made block boundaries differ). `stream_windows` / `file_windows` mix the blocks to mono,
resample them as a stream and cut the model's windows as the samples arrive, so memory stays at a few windows and one
block whatever the file's length. Errors name the file and say what it is ("not a file", "not audio (or a format
soundfile cannot read)", "unreadable audio", "audio contains NaN or inf"); the decoder's own output (libmpg123 writes
to fd 2 from C) stays off the terminal and goes into the message.

Users: the data loader (`data.decoding`), the dataset builders, `spa-tag`, and the exported tagger. `spa-export` copies
this file beside `tag_onnx.py`, so it must stay importable on its own: numpy, soundfile, soxr (only to resample) and
the dependency-free `modeling_spa/waveforms.py` (copied along), nothing else of the package, never torch.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile

try:  # in the package
    from ..waveforms import RESAMPLE_QUALITY, mix_to_mono
except ImportError:  # beside an exported tag_onnx.py
    from waveforms import RESAMPLE_QUALITY, mix_to_mono

# Frames decoded at a time: about 5.5 s at 48 kHz, 1 MiB of float32 per channel.
BLOCK_FRAMES = 1 << 18
# `read_all` reads at most this many frames at once (a corrupt header may state any length).
_MAX_READ_FRAMES = 1 << 22


class AudioFileError(ValueError):
    """An audio file that cannot be used: the message names it (`name`) and says why (`reason`)."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


# fd 2 is the process's: two threads redirecting it at once would each restore the other's temporary file, and the
# terminal would be lost for good. A child forked while another thread held the lock gets a fresh one.
_FD2_LOCK = threading.RLock()


def _new_fd2_lock() -> None:
    global _FD2_LOCK
    _FD2_LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_fd2_lock)


@contextmanager
def decoder_output() -> Iterator[list[str]]:
    """Runs the block with the process's fd 2 sent to a temporary file; the yielded list then holds its lines.

    libmpg123 (libsndfile's MP3 decoder) writes notes and errors ("Illegal Audio-MPEG-Header", "dequantization
    failed") to fd 2 from C, where `sys.stderr` cannot catch them. Around opening and reading, they are kept for
    the error message instead of reaching the user's terminal. Only decoder calls run inside; what another thread
    writes to stderr during one (milliseconds) is caught with it. Where the process has no fd 2, nothing changes.
    """
    said: list[str] = []
    with _FD2_LOCK, tempfile.TemporaryFile() as sink:
        saved = _redirect_fd2(sink.fileno())
        try:
            yield said
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            sink.seek(0)
            said += [line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip()]


def _redirect_fd2(target: int) -> int | None:
    """Points fd 2 at `target`; returns a duplicate of the old fd 2 to restore, or None where there is none."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()  # Python's own pending text goes out first, to the terminal
        saved = os.dup(2)
    except (OSError, ValueError):
        return None
    os.dup2(target, 2)
    return saved


def _decoder_said(said: list[str]) -> str:
    """The decoder's first line (where it names the problem; later ones are its attempts to resync)."""
    if not said:
        return ""
    more = f" (and {len(said) - 1} more line(s))" if len(said) > 1 else ""
    return f"; the decoder said: {said[0]}{more}"


class _ForwardSoundFile(soundfile.SoundFile):
    """A `soundfile.SoundFile` whose reads never seek.

    On a seekable file soundfile follows every read with `seek(tell() + frames, SEEK_SET)`, a seek to where it
    already is. libsndfile (1.2.2) hands it to mpg123, which resyncs: in MP3s whose frames borrow from earlier ones
    (the bit reservoir; after digital silence, in real recordings) the ~1,100 samples after each block boundary came
    back different from a whole-file decode (up to 0.11 on a real MP3 at spa-tag's blocks, 0.45 with 1,000-frame
    blocks), with "dequantization failed" on stderr, the mark of a frame decoded without the data it borrows.
    Read forward only, blocks of any size join to exactly the whole-file decode, in every format
    (tests/data/test_audio_files.py). `seek()` itself still works, for a crop that wants it (`seek_frame`).
    """

    def seekable(self) -> bool:
        return False


# libsndfile's error codes whose own words mislead or add nothing when a file is not audio: 1 "Format not
# recognised.", 7 "File does not exist or is not a regular file (possibly a pipe?)." (its MP3 decoder's failure).
_NOT_AUDIO_CODES = (1, 7)
_SYSTEM_ERROR_CODE = 2  # the operating system refused; "System error." alone


def _not_a_file(path: str | os.PathLike) -> str | None:
    if os.path.isdir(path):
        return "not a file (a directory)"
    if not os.path.exists(path):
        return "not a file (no such file)"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "empty file (0 bytes), not audio"
    return None


def _open_failure(err: Exception, said: list[str]) -> str:
    code, words = getattr(err, "code", None), getattr(err, "error_string", None) or str(err)
    if code == _SYSTEM_ERROR_CODE:
        reason = f"cannot be read ({words})"
    elif code in _NOT_AUDIO_CODES:
        reason = "not audio (or a format soundfile cannot read)"
    else:
        reason = f"not audio (or a format soundfile cannot read): {words}"
    return reason + _decoder_said(said)


def open_audio(file, name: str | None = None) -> soundfile.SoundFile:
    """`file` (a path or a binary file object) opened for forward reading; `AudioFileError` naming it (`name`,
    default the path) when it is not a file or not audio. The decoder's own output stays off the terminal."""
    name = str(file) if name is None else name
    if isinstance(file, (str, os.PathLike)) and (problem := _not_a_file(file)):
        raise AudioFileError(name, problem)
    with decoder_output() as said:
        try:
            return _from_the_start(_ForwardSoundFile(file))
        except (soundfile.LibsndfileError, RuntimeError, OSError, TypeError) as err:
            failure = err
    raise AudioFileError(name, _open_failure(failure, said)) from failure


def _from_the_start(sound: soundfile.SoundFile) -> soundfile.SoundFile:
    """`sound` sought to its first frame, as `soundfile.read` does before it reads a whole file.

    That seek is no no-op: after it, libsndfile's MPEG decoder gives MPEG-2 files (16, 22.05, 24 kHz) samples that
    differ by 1-2 float32 ulps from a fresh decode. With it, blocks read forward equal `soundfile.read` bitwise (and
    so the dataset builders' decoded-audio hashes); a stream that cannot seek starts at its first frame anyway.
    """
    if soundfile.SoundFile.seekable(sound):
        sound.seek(0)
    return sound


def read_blocks(sound: soundfile.SoundFile, name: str, frames: int | None = None) -> Iterator[np.ndarray]:
    """Blocks of at most `frames` (default `BLOCK_FRAMES`) (frames, channels) float32 samples of a file that
    `open_audio` opened, read forward until the decoder has no more: together exactly the whole-file decode.
    `AudioFileError` naming the file when decoding fails or a sample is NaN or infinite."""
    frames = frames or BLOCK_FRAMES
    while True:
        failure = None
        with decoder_output() as said:
            try:
                block = sound.read(frames, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError) as err:
                failure = err
        if failure is not None:
            words = getattr(failure, "error_string", None) or failure
            raise AudioFileError(name, f"unreadable audio ({words}){_decoder_said(said)}") from failure
        if not len(block):
            return
        if not np.isfinite(block).all():
            raise AudioFileError(name, "audio contains NaN or inf")
        yield block


def seek_frame(sound: soundfile.SoundFile, name: str, frame: int) -> None:
    """Moves a file that `open_audio` opened to `frame` (exact for FLAC and WAV; an MP3 decoder resyncs near it);
    `AudioFileError` naming the file where it cannot (a truncated FLAC)."""
    with decoder_output() as said:
        try:
            sound.seek(frame)
            return
        except (soundfile.LibsndfileError, RuntimeError) as err:
            failure = err
    words = getattr(failure, "error_string", None) or failure
    raise AudioFileError(name, f"unreadable audio: cannot seek to frame {frame} ({words}){_decoder_said(said)}")


def read_all(sound: soundfile.SoundFile, name: str) -> np.ndarray:
    """The rest of a file that `open_audio` opened, (frames, channels) float32, as `read_blocks` reads it: usually in
    one read of the length its header states."""
    blocks = list(read_blocks(sound, name, min(max(sound.frames, 1), _MAX_READ_FRAMES)))
    if len(blocks) == 1:
        return blocks[0]
    return np.concatenate(blocks) if blocks else np.zeros((0, sound.channels), dtype=np.float32)


def _resample_stream(rate: int, sampling_rate: int):
    """A soxr stream from `rate` to `sampling_rate`; None when they are equal (soxr is then not needed)."""
    if rate == sampling_rate:
        return None
    import soxr

    return soxr.ResampleStream(rate, sampling_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)


def stream_windows(
    blocks: Iterable[np.ndarray], rate: int, sampling_rate: int, window: int, hop: int
) -> Iterator[np.ndarray]:
    """The windows of a clip that arrives in blocks of (frames, channels) float32 samples at `rate`.

    Each block is mixed to mono and resampled to `sampling_rate` by a soxr stream; the windows are those of
    `window_starts` over the whole clip (float32, `window` samples, or the whole clip when it is no longer), equal
    to what mixing and resampling the whole clip at once (`soxr.resample`, quality `RESAMPLE_QUALITY`) and slicing
    would give. Only the samples later windows need are kept: memory stays at about one window plus one block.
    """
    resampler = _resample_stream(rate, sampling_rate)
    buffer = np.zeros(0, dtype=np.float32)
    offset = start = covered = 0  # clip positions of buffer[0], of the next regular window, of the covered end
    for piece in _mono_pieces(blocks, resampler):
        buffer = np.concatenate([buffer, piece])
        end = offset + len(buffer)
        while start + window <= end:
            yield buffer[start - offset : start - offset + window].copy()
            covered, start = start + window, start + hop
        # Keep what the next regular window needs, and the last `window` samples for an end-aligned one.
        drop = max(min(start, end - window) - offset, 0)
        buffer, offset = buffer[drop:], offset + drop
    if covered == 0 and len(buffer):
        yield buffer.copy()
    elif covered and covered < offset + len(buffer):
        yield buffer[len(buffer) - window :].copy()


def _mono_pieces(blocks: Iterable[np.ndarray], resampler) -> Iterator[np.ndarray]:
    for block in blocks:
        mono = np.ascontiguousarray(mix_to_mono(block))
        yield mono if resampler is None else resampler.resample_chunk(mono)
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def file_windows(
    path: str | Path, sampling_rate: int, window: int, hop: int, block_frames: int | None = None
) -> Iterator[np.ndarray]:
    """The windows of an audio file at `sampling_rate` (`stream_windows`), decoded forward in blocks of
    `block_frames` (default `BLOCK_FRAMES`). `AudioFileError` naming the file when it cannot be used."""
    with open_audio(path) as sound:
        blocks = read_blocks(sound, str(path), block_frames)
        try:
            yield from stream_windows(blocks, sound.samplerate, sampling_rate, window, hop)
        except ModuleNotFoundError as err:  # soxr, needed only for a file at another rate
            reason = f"at {sound.samplerate} Hz where the model takes {sampling_rate} Hz: install soxr to resample it"
            raise AudioFileError(str(path), reason) from err


def batches(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last one shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def too_short(samples: int, rate: int, min_samples: int) -> str:
    return f"too short: {samples} sample(s) at {rate} Hz, one analysis window of the model needs {min_samples}"
