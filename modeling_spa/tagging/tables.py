"""Tables written row by row that a run started again continues (`Table`): CSV, JSON lines or Parquet, by extension.

The table is the record of what is done: a run started again with the same output reads the keys already there and
tags only the others, so a run killed at any moment loses nothing it wrote and tags no file twice. How each format
stays readable at every moment:
- CSV and JSON lines: the file is created with its header by a rename (never half a header), then each row is
  appended with one write() of its whole line, which a killed process either made or did not. A last line without
  its newline (a machine that went down mid-write) is cut off when the run starts again.
- Parquet, which cannot be appended to: rows are written as part files in `<output>.parts/`, each written to a
  temporary name and renamed (every 256 rows or 5 s), and merged into the output file by a rename when the parts
  hold half as many rows as the output (so the merges rewrite each row a few times in all). The output is readable
  at every moment and lags the parts by at most a third of its rows; the parts are the rest of the record.
- Several processes (`accelerate launch`): each appends to its own part in `<output>.parts/` (`rank-<r>.csv`, ...);
  the main process merges them at the end.
At the end (`finish`), the output is rewritten once in the collection's order (by a rename) and the parts removed,
so the table does not depend on which file finished first or on the number of processes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..files import replace_atomically

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
# Parquet part files: written every this many rows, or this many seconds after the first unwritten row.
PART_ROWS = 256
PART_SECONDS = 5.0
# Parquet parts are merged into the output once they hold this many rows and half as many as the output.
MERGE_ROWS = 1024


def table_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: the output's extension says its format; use one of {', '.join(FORMATS)}")
    return FORMATS[suffix]


class Table:
    """A table at `path` with `columns` ((name, type) pairs), whose rows are identified by `key_columns`.

    `order`: the keys of the whole collection, the order of the finished table. `rank`/`world`: this process among
    the processes writing the table together (each its own part; the main process calls `finish`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        columns: Sequence[tuple[str, str]],
        key_columns: Sequence[str] = ("file",),
        order: Sequence[str] = (),
        rank: int = 0,
        world: int = 1,
    ):
        self.path, self.columns = Path(path), list(columns)
        self.names = [name for name, _ in self.columns]
        self.key_columns, self.order = tuple(key_columns), order
        self.rank, self.world = rank, world
        self.format = _FORMATS[table_format(path)](self)
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def start(self) -> dict[tuple, bool]:
        """Prepares the output (created empty when missing, so it is readable from the start) and returns the rows
        already recorded in it and its parts: key -> whether the row is an error."""
        if self.rank == 0 and not self.path.exists():
            self.format.write_rows(self.path, [])
        return self.format.recorded()

    def write(self, row: dict, flush: bool = True) -> None:
        """Appends `row`. Parquet buffers rows and writes a part when one is due; `flush=False` leaves that to the
        caller (`due`, `close`), which keeps two tables in step (embeddings: a file's windows before the file)."""
        self.format.append(row)
        if flush and self.due():
            self.close()

    def due(self) -> bool:
        """Whether buffered rows should be written now (Parquet: a part's worth of rows, or their age)."""
        return self.format.due()

    def close(self) -> None:
        """Writes what is buffered (Parquet); the rows are then all in the output or its parts."""
        self.format.flush()

    def finish(self) -> dict[tuple, bool]:
        """Main process, after every process closed: the output rewritten with all rows in the collection's order
        (each key once), the parts removed. Returns the rows: key -> whether the row is an error."""
        self.close()
        data = self.format.all_rows()
        keys, errors = self.format.keys(data), self.format.errors(data)
        keep = self.order_rows(keys)
        self.format.write_rows(self.path, self.format.take(data, keep))
        shutil.rmtree(self.parts, ignore_errors=True)
        return {keys[i]: errors[i] for i in keep}

    def order_rows(self, keys: list[tuple]) -> list[int]:
        """The rows to keep, each key once (its first row), in the collection's order; keys not in it after."""
        position = {key: i for i, key in enumerate(self.order)}
        first: dict[tuple, int] = {}
        for row, key in enumerate(keys):
            first.setdefault(key, row)
        end = len(position)
        return sorted(first.values(), key=lambda row: (position.get(keys[row][0], end), *keys[row][1:], row))


class _LineFormat:
    """CSV or JSON lines: one write() per row, appended to the output (one process) or to this process's part."""

    suffix = ""

    def __init__(self, table: Table):
        self.table = table
        self.handle = None

    def target(self) -> Path:
        table = self.table
        return table.path if table.world == 1 else table.parts / f"rank-{table.rank}{self.suffix}"

    def append(self, row: dict) -> None:
        if self.handle is None:
            self.handle = self._open_for_append(self.target())
        data = self.encode([row])
        while data:  # a regular file takes it in one write; the loop is for the exceptions
            data = data[self.handle.write(data) :]

    def _open_for_append(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size == 0:
            self.write_rows(path, [])
        else:
            _cut_partial_line(path)
        return open(path, "ab", buffering=0)

    def due(self) -> bool:
        return False  # every row is written as it comes

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def write_rows(self, path: Path, rows: list) -> None:
        replace_atomically(path, lambda f: f.write(self.header() + self.encode(rows)))

    def files(self) -> list[Path]:
        parts = sorted(self.table.parts.glob(f"rank-*{self.suffix}")) if self.table.parts.is_dir() else []
        return [path for path in [self.table.path, *parts] if path.exists()]

    def all_rows(self) -> list:
        return [row for path in self.files() for row in self.read(path)]

    def keys(self, rows: list) -> list[tuple]:
        return [tuple(self.value(row, name) for name in self.table.key_columns) for row in rows]

    def errors(self, rows: list) -> list[bool]:
        return [bool(self.value(row, "error")) for row in rows] if "error" in self.table.names else [False] * len(rows)

    @staticmethod
    def take(rows: list, keep: list[int]) -> list:
        return [rows[i] for i in keep]

    def recorded(self) -> dict[tuple, bool]:
        rows = self.all_rows()
        return dict(zip(self.keys(rows), self.errors(rows), strict=True))


class _CsvFormat(_LineFormat):
    suffix = ".csv"

    def header(self) -> bytes:
        return self._line(self.table.names)

    @staticmethod
    def _line(values: Iterable) -> bytes:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerow(values)
        return text.getvalue().encode("utf-8")

    def encode(self, rows: list) -> bytes:
        # A row read back from a CSV is a list of texts; a new row is a dict of values (None: an empty cell).
        return b"".join(
            self._line(row if isinstance(row, list) else ["" if row[n] is None else row[n] for n in self.table.names])
            for row in rows
        )

    def read(self, path: Path) -> list[list[str]]:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
        if not lines:
            return []
        if lines[0] != self.table.names:
            raise ValueError(_other_columns(path, lines[0], self.table.names))
        return [line for line in lines[1:] if len(line) == len(self.table.names)]

    def value(self, row: list[str], name: str) -> str:
        return row[self.table.names.index(name)]


class _JsonLinesFormat(_LineFormat):
    suffix = ".jsonl"

    def header(self) -> bytes:
        return b""

    def encode(self, rows: list) -> bytes:
        return b"".join(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n" for row in rows)

    def read(self, path: Path) -> list[dict]:
        rows = []
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a machine that went down
                continue
            if list(row) != self.table.names:
                raise ValueError(_other_columns(path, list(row), self.table.names))
            rows.append(row)
        return rows

    def value(self, row: dict, name: str):
        return row[name]


def _cut_partial_line(path: Path) -> None:
    """Removes a last line without its newline (a write cut short), so that appending starts on a new line."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "rb+") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _other_columns(path: Path, found: list, expected: list) -> str:
    missing, extra = [n for n in expected if n not in found], [n for n in found if n not in expected]
    return (
        f"{path} holds other columns than this run writes (missing {missing[:5]}, extra {extra[:5]}): it was written "
        "with other options (top-k, all scores, label info, labels); use the same options, or another output"
    )


class _ParquetFormat:
    """Parquet: part files of this process's rows (renamed into place), merged into the output (Arrow tables, so a
    merge of embeddings costs their bytes, not Python objects)."""

    def __init__(self, table: Table):
        import pyarrow as pa

        self.table = table
        self.schema = pa.schema([(name, _arrow_type(kind)) for name, kind in table.columns])
        self.buffer: list[dict] = []
        self.first_buffered = 0.0
        self.sequence = None

    def append(self, row: dict) -> None:
        if not self.buffer:
            self.first_buffered = time.monotonic()
        self.buffer.append(row)

    def due(self) -> bool:
        age = time.monotonic() - self.first_buffered
        return bool(self.buffer) and (len(self.buffer) >= PART_ROWS or age >= PART_SECONDS)

    def flush(self) -> None:
        if not self.buffer:
            return
        self.table.parts.mkdir(parents=True, exist_ok=True)
        if self.sequence is None:
            mine = sorted(self.table.parts.glob(f"part-{self.table.rank}-*.parquet"))
            self.sequence = int(mine[-1].stem.rsplit("-", 1)[1]) + 1 if mine else 0
        self.write_rows(self.table.parts / f"part-{self.table.rank}-{self.sequence:06d}.parquet", self.buffer)
        self.sequence += 1
        self.buffer = []
        if self.table.world == 1:
            self._merge_when_due()

    def _merge_when_due(self) -> None:
        import pyarrow.parquet as pq

        parts = self._parts()
        in_parts = sum(pq.read_metadata(path).num_rows for path in parts)
        in_output = pq.read_metadata(self.table.path).num_rows if self.table.path.exists() else 0
        if in_parts >= max(MERGE_ROWS, in_output // 2):
            data = self.all_rows()
            self.write_rows(self.table.path, self.take(data, self.table.order_rows(self.keys(data))))
            for path in parts:  # after the rename: a kill in between leaves rows twice, which merging removes
                path.unlink()

    def _parts(self) -> list[Path]:
        return sorted(self.table.parts.glob("part-*.parquet")) if self.table.parts.is_dir() else []

    def _files(self) -> list[Path]:
        return ([self.table.path] if self.table.path.exists() else []) + self._parts()

    def write_rows(self, path: Path, rows) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=self.schema)
        replace_atomically(path, lambda f: pq.write_table(data, f))

    def read(self, path: Path, columns: Sequence[str] | None = None):
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        if names != self.table.names:
            raise ValueError(_other_columns(path, names, self.table.names))
        return pq.read_table(path, columns=list(columns) if columns is not None else None, schema=self.schema)

    def all_rows(self):
        import pyarrow as pa

        tables = [self.read(path) for path in self._files()]
        if self.buffer:
            tables.append(pa.Table.from_pylist(self.buffer, schema=self.schema))
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def keys(self, data) -> list[tuple]:
        return list(zip(*(data.column(name).to_pylist() for name in self.table.key_columns), strict=True))

    def errors(self, data) -> list[bool]:
        if "error" not in self.table.names:
            return [False] * data.num_rows
        return [bool(error) for error in data.column("error").to_pylist()]

    @staticmethod
    def take(data, keep: list[int]):
        return data.take(keep)

    def recorded(self) -> dict[tuple, bool]:
        import pyarrow as pa

        columns = [*self.table.key_columns, *(["error"] if "error" in self.table.names else [])]
        schema = pa.schema([self.schema.field(name) for name in columns])
        tables = [self.read(path, columns).cast(schema) for path in self._files()]
        data = pa.concat_tables(tables) if tables else schema.empty_table()
        return dict(zip(self.keys(data), self.errors(data), strict=True))


def _arrow_type(kind: str):
    """The Arrow type of a column type of `rows` (vectors: embeddings)."""
    import pyarrow as pa

    types = {"string": pa.string(), "float64": pa.float64(), "float32": pa.float32(), "int64": pa.int64(),
             "list<float32>": pa.list_(pa.float32())}  # fmt: skip
    return types[kind]


_FORMATS = {"csv": _CsvFormat, "jsonl": _JsonLinesFormat, "parquet": _ParquetFormat}

__all__ = ["FORMATS", "Table", "table_format"]
