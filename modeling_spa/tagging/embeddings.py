"""Embeddings of a collection, per file and per window, to Parquet (and NumPy): for retrieval and linear probes.

A folder holds two tables (`tables.Table`, so a killed run continues where it stopped):
- `files.parquet`: `file`, `duration_s`, `windows`, `error`, `audio_embeds` (E_a, the SPA embedding in the
  audio-text space, D floats) and `pooled_output` (the backbone's pooled embedding f_a(X), U floats): the means of
  the windows' weighted by their real samples, which is what `model(...)` returns for the whole clip
  (`audio_embeds`) and `model.spa(...)` (`pooled_output`);
- `windows.parquet`: `file`, `window` (its number), `start_s`, `end_s` (the window's real samples), and the same two
  embeddings for that window alone, equal to the model's outputs for that window.
`numpy=True` also writes, at the end, `files.json` (the keys of the tagged files, in order) with `audio_embeds.npy`
(files, D) and `pooled_output.npy` (files, U) in that order, and `window_file.npy` (each window's row in
`files.json`), `window_start_s.npy`, `window_audio_embeds.npy`, `window_pooled_output.npy`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..files import write_json
from .pipeline import TaggedFile
from .tables import Table

FILE_COLUMNS = (("file", "string"), ("duration_s", "float64"), ("windows", "int64"), ("error", "string"),
                ("audio_embeds", "list<float32>"), ("pooled_output", "list<float32>"))  # fmt: skip
WINDOW_COLUMNS = (("file", "string"), ("window", "int64"), ("start_s", "float64"), ("end_s", "float64"),
                  ("audio_embeds", "list<float32>"), ("pooled_output", "list<float32>"))  # fmt: skip


class EmbeddingOutput:
    """The two tables of an embeddings folder, written in step: a file's window rows reach disk before its file
    row, so a file recorded in `files.parquet` has all its windows (a killed run may leave windows of a file it
    had not recorded, which the resumed run writes again and the merge keeps once)."""

    def __init__(
        self,
        folder: str | os.PathLike,
        order: Sequence[str] = (),
        rank: int = 0,
        world: int = 1,
        windows: bool = True,
        numpy: bool = False,
    ):
        self.folder, self.numpy = Path(folder), numpy
        self.files = Table(self.folder / "files.parquet", FILE_COLUMNS, ("file",), order, rank, world)
        self.windows = None
        if windows:
            self.windows = Table(self.folder / "windows.parquet", WINDOW_COLUMNS, ("file", "window"), order, rank,
                                 world)  # fmt: skip

    def start(self) -> dict[tuple, bool]:
        """The files already recorded (key -> whether it failed)."""
        if self.windows is not None:
            self.windows.start()
        return self.files.start()

    def write(self, result: TaggedFile, values: np.ndarray | None = None) -> None:
        """Writes `result`'s rows (`values`, a table's ranking, do not concern embeddings)."""
        if self.windows is not None and result.error is None:
            for row in window_rows(result):
                self.windows.write(row, flush=False)
        self.files.write(file_row(result), flush=False)
        if self.due():
            self.close()

    def due(self) -> bool:
        return self.files.due() or (self.windows is not None and self.windows.due())

    def close(self) -> None:
        if self.windows is not None:
            self.windows.close()
        self.files.close()

    def finish(self) -> dict[tuple, bool]:
        if self.windows is not None:
            self.windows.finish()
        recorded = self.files.finish()
        if self.numpy:
            export_numpy(self.folder)
        return recorded


def file_row(result: TaggedFile) -> dict:
    ok = result.error is None
    return {
        "file": result.key,
        "duration_s": result.duration_s,
        "windows": len(result.window_starts) if ok else None,
        "error": result.error,
        "audio_embeds": result.audio_embeds if ok else None,
        "pooled_output": result.pooled_output if ok else None,
    }


def window_rows(result: TaggedFile) -> list[dict]:
    starts, ends = result.window_starts, result.window_starts + result.window_samples
    return [
        {"file": result.key, "window": i, "start_s": float(starts[i] / result.sampling_rate),
         "end_s": float(ends[i] / result.sampling_rate), "audio_embeds": result.window_audio_embeds[i],
         "pooled_output": result.window_pooled_output[i]}
        for i in range(len(starts))
    ]  # fmt: skip


def _matrix(column) -> np.ndarray:
    """A list<float32> column without nulls as a (rows, size) float32 array."""
    values = column.combine_chunks().flatten().to_numpy()
    return values.reshape(len(column), -1) if len(column) else values.reshape(0, 0)


def export_numpy(folder: str | os.PathLike) -> None:
    """The folder's Parquet tables as NumPy arrays (see the module docstring); files with an error are left out."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = Path(folder)
    files = pq.read_table(folder / "files.parquet")
    files = files.filter(pc.is_null(files.column("error")))
    keys = files.column("file").to_pylist()
    np.save(folder / "audio_embeds.npy", _matrix(files.column("audio_embeds")))
    np.save(folder / "pooled_output.npy", _matrix(files.column("pooled_output")))
    if (folder / "windows.parquet").exists():
        windows = pq.read_table(folder / "windows.parquet")
        row_of = {key: i for i, key in enumerate(keys)}
        np.save(folder / "window_file.npy", np.array([row_of[k] for k in windows.column("file").to_pylist()],
                                                     dtype=np.int64))  # fmt: skip
        np.save(folder / "window_start_s.npy", windows.column("start_s").to_numpy())
        np.save(folder / "window_audio_embeds.npy", _matrix(windows.column("audio_embeds")))
        np.save(folder / "window_pooled_output.npy", _matrix(windows.column("pooled_output")))
    write_json(folder / "files.json", keys)


__all__ = ["FILE_COLUMNS", "WINDOW_COLUMNS", "EmbeddingOutput", "export_numpy", "file_row", "window_rows"]
