"""AudioSet-format builds: sharded parquet with the Hub's columns, written resumably by parallel workers.

A build folder (what `load_audioset(folder, split)` and `datasets.load_dataset(folder)` read):

    data/{split}-{index:05d}-of-{count:05d}.parquet   shards; columns `video_id`, `audio` (`Audio(decode=False)`:
                                                     {bytes, path}, FLAC), `labels` (mids), `human_labels` (names),
                                                     plus a builder's extra string columns
    build_report.json                                 clips written and skipped per split, each skip with its reason
    README.md, classes.json                           written by the builder (dataset card, class list)
    .build/shards/{shard}.json                        the resume record, one file per completed shard (not part of
                                                     the dataset; never uploaded)

How a build stays correct when it is killed and rerun:
- The plan (the clips of each split, in order) is cut into shards of `clips_per_shard` planned clips, so shard
  names and contents depend only on the plan, never on the number of workers or on timing.
- A shard is written to `.build/` and moved into `data/` with `os.replace` once complete: `data/` never holds a
  partial shard. Its entry in the resume record (a hash of its planned clips and the build settings, its size,
  its sha256, its skips) is then written the same way, in a file of its own.
- A rerun keeps every shard whose record matches the plan and whose file is there with the recorded size, and builds
  only the others, so nothing is redone or duplicated; shards of another plan (other shard counts) are removed.
- Workers return rows in plan order (`Pool.imap`), so the same plan gives byte-identical shards with any worker count.
"""

from __future__ import annotations

import dataclasses
import io
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from ..data.audio_files import AudioFileError, open_audio, read_all
from ..feature_extraction_spa import mix_to_mono, resample
from ..files import sha256_of_bytes, sha256_of_file, write_json

DATA_DIR = "data"
STATE_DIR = ".build"
REPORT_FILE = "build_report.json"
# datasets writes audio datasets in row groups of 100 rows (readers then stream 100 clips at a time); so do we.
ROW_GROUP_SIZE = 100
# Bump when what a shard holds for the same plan changes (encoding, columns): old shards are then rebuilt.
FORMAT_VERSION = 1
_SHARD_PATTERN = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")
_PCM16_MAX = 1.0 - 1.0 / 32768  # largest float that PCM_16 represents without wrapping


class BuildError(RuntimeError):
    """A build cannot go on; the message names the file, clip or setting at fault."""


@dataclass(frozen=True)
class Skip:
    """A planned clip that is not in the build: counted and listed in the report with its reason."""

    video_id: str
    kind: str  # "missing", "unreadable", ...
    reason: str
    file: str = ""


@dataclass
class Shard:
    split: str
    index: int
    count: int
    tasks: list

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.count:05d}.parquet"


def audioset_features(extra_columns: Sequence[str] = ()):
    """The Hub's AudioSet columns (audio as `Audio(decode=False)`), then `extra_columns` as strings."""
    import datasets

    columns = {
        "video_id": datasets.Value("string"),
        "audio": datasets.Audio(decode=False),
        "labels": datasets.List(datasets.Value("string")),
        "human_labels": datasets.List(datasets.Value("string")),
    }
    columns.update({name: datasets.Value("string") for name in extra_columns})
    return datasets.Features(columns)


def encode_flac(mono: np.ndarray, rate: int) -> bytes:
    """16-bit mono FLAC bytes. Samples are clipped first: resampling can overshoot 1.0, and PCM would wrap."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(mono, -1.0, _PCM16_MAX), rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def audio_row(video_id: str, flac: bytes, labels: Sequence[str], human_labels: Sequence[str], **extra: str) -> dict:
    """One dataset row; the audio `path` is the clip id with .flac, as the Hub's rows name their files."""
    row = {
        "video_id": video_id,
        "audio": {"bytes": flac, "path": f"{video_id}.flac"},
        "labels": list(labels),
        "human_labels": list(human_labels),
    }
    row.update(extra)
    return row


@dataclass(frozen=True)
class ClipTask:
    """One planned clip whose audio comes from a file; `file` empty means the clip is missing (`reason` says why).

    `stamp` (size and mtime) is part of the task, so a replaced file rebuilds its shard on the next run.
    """

    video_id: str
    labels: tuple[str, ...]
    human_labels: tuple[str, ...]
    file: str = ""
    stamp: str = ""
    extra: tuple[tuple[str, str], ...] = ()
    reason: str = "no file for this clip"


def file_stamp(path: str | Path) -> str:
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def riff_ogg_payload(data: bytes) -> bytes | None:
    """The Ogg stream inside a RIFF/WAVE file with format tag 0x674f (Ogg Vorbis mode 1), else None.

    libsndfile cannot decode such files, but their `data` chunk is a complete Ogg Vorbis stream, which it can.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position, fmt_tag = 12, None
    while position + 8 <= len(data):
        chunk, size = data[position : position + 4], int.from_bytes(data[position + 4 : position + 8], "little")
        body = data[position + 8 : position + 8 + size]
        if chunk == b"fmt ":
            fmt_tag = int.from_bytes(body[:2], "little")
        elif chunk == b"data":
            return body if fmt_tag == 0x674F and body[:4] == b"OggS" else None
        position += 8 + size + (size & 1)
    return None


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 samples and rate of any file soundfile reads, sniffed by content (not by name).

    Read as spa-tag reads files (`onnx_tagger.open_audio`, `read_all`): an `AudioFileError` naming the file, the
    decoder's own output kept off the terminal.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    payload = riff_ogg_payload(data)
    with open_audio(io.BytesIO(payload or data), str(path)) as sound:
        return read_all(sound, str(path)), sound.samplerate


def encode_clip(task: ClipTask, rate: int, min_seconds: float = 0.0) -> dict | Skip:
    """Decode `task.file`, mix to mono, resample once to `rate`, encode FLAC: a row, or a `Skip` with the reason.

    A clip shorter than `min_seconds` is padded with trailing silence (never looped: a looped hit is another sound).
    """
    if not task.file:
        return Skip(task.video_id, "missing", task.reason)
    try:
        samples, file_rate = read_audio(task.file)
    except AudioFileError as err:
        return Skip(task.video_id, "unreadable", err.reason, task.file)
    except OSError as err:  # the file itself could not be read
        return Skip(task.video_id, "unreadable", str(err), task.file)
    if samples.size == 0:
        return Skip(task.video_id, "unreadable", "empty audio", task.file)
    if not np.isfinite(samples).all():
        return Skip(task.video_id, "unreadable", "audio contains NaN or inf", task.file)
    mono = resample(mix_to_mono(samples), file_rate, rate)
    short = int(round(min_seconds * rate)) - len(mono)
    if short > 0:
        mono = np.concatenate([mono, np.zeros(short, dtype=np.float32)])
    return audio_row(task.video_id, encode_flac(mono, rate), task.labels, task.human_labels, **dict(task.extra))


def plan_shards(plan: dict[str, Sequence], clips_per_shard: int) -> list[Shard]:
    """Cut each split's planned clips, in order, into shards of `clips_per_shard`."""
    if clips_per_shard < 1:
        raise ValueError(f"clips_per_shard must be at least 1, got {clips_per_shard}.")
    shards = []
    for split, tasks in plan.items():
        count = -(-len(tasks) // clips_per_shard)
        shards += [
            Shard(split, i, count, list(tasks[i * clips_per_shard : (i + 1) * clips_per_shard])) for i in range(count)
        ]
    return shards


def shard_key(shard: Shard, settings: dict) -> str:
    """What a shard's content depends on: its planned clips, the build settings and the format version."""
    record = {
        "format": FORMAT_VERSION,
        "settings": settings,
        "tasks": [dataclasses.asdict(task) for task in shard.tasks],
    }
    return sha256_of_bytes(json.dumps(record, sort_keys=True, default=str).encode())


def shard_records(folder: str | Path) -> dict[str, dict]:
    """{shard name: its resume record} of a build folder (one small JSON file per completed shard)."""
    records = {}
    for path in sorted((Path(folder) / STATE_DIR / "shards").glob("*.json")):
        try:
            records[path.name.removesuffix(".json")] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:  # cannot happen with atomic writes; a hand-edited file: rebuild that shard
            continue
    return records


def _write_record(folder: Path, name: str, record: dict | None) -> None:
    """One file per shard, so that a build of thousands of shards does not rewrite one growing file each time."""
    path = folder / STATE_DIR / "shards" / f"{name}.json"
    if record is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record, indent=1, sort_keys=True)


def _is_done(folder: Path, shard: Shard, key: str, state: dict) -> bool:
    entry = state.get(shard.name)
    if not entry or entry["key"] != key:
        return False
    path = folder / DATA_DIR / shard.name
    if entry["rows"] == 0:  # every clip of the shard was skipped: no file (datasets cannot read an empty one)
        return not path.exists()
    return path.is_file() and path.stat().st_size == entry["size"]


def _remove_foreign_shards(folder: Path, planned: set[str]) -> list[str]:
    """Shards in data/ that the plan does not name (an older plan's): removed, or datasets would load them."""
    removed = []
    for path in sorted((folder / DATA_DIR).glob("*.parquet")):
        if _SHARD_PATTERN.match(path.name) and path.name not in planned:
            path.unlink()
            removed.append(path.name)
    return removed


def write_shard(folder: Path, shard: Shard, rows: list[dict], features) -> tuple[int, str]:
    """Write one shard atomically; its size and sha256. A shard without rows has no file (size 0, no hash)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        (folder / DATA_DIR / shard.name).unlink(missing_ok=True)
        return 0, ""
    table = pa.Table.from_pylist(rows, schema=features.arrow_schema)
    tmp = folder / STATE_DIR / f"{shard.name}.tmp"
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE)
    digest = sha256_of_file(tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())  # the bytes are on disk before the name says the shard is complete
    size = tmp.stat().st_size
    os.replace(tmp, folder / DATA_DIR / shard.name)
    return size, digest


def _pool_context(work: Callable):
    """Workers that do not inherit the parent's threads or state (`work` must be picklable, as under spawn).

    Where there is a fork server, it imports `work`'s module once and forks the workers from it, instead of each
    worker importing the package (and with it torch and transformers) again.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([getattr(work, "func", work).__module__])
    return context


def _results(work: Callable, tasks: Iterable, workers: int) -> Iterator:
    """Results of `work` over `tasks`, in order: in this process, or in a pool of `workers` processes."""
    if workers <= 1:
        yield from map(work, tasks)
        return
    with _pool_context(work).Pool(workers) as pool:
        yield from pool.imap(work, tasks, chunksize=2)


def _progress(folder: Path, plan: dict, settings: dict, features, clips_per_shard: int):
    """The plan's shards, their keys, the resume record, and the shards still to build."""
    settings = {**settings, "columns": list(features)}
    shards = plan_shards(plan, clips_per_shard)
    keys = {shard.name: shard_key(shard, settings) for shard in shards}
    state = shard_records(folder)
    pending = [shard for shard in shards if not _is_done(folder, shard, keys[shard.name], state)]
    return shards, keys, state, pending


def pending_shards(
    folder: str | Path, plan: dict, settings: dict, extra_columns: Sequence[str] = (), clips_per_shard: int = 1000
) -> list[str]:
    """Names of the shards that `build_shards` with these arguments would (re)build; empty when the build is done."""
    features = audioset_features(extra_columns)
    return [shard.name for shard in _progress(Path(folder), plan, settings, features, clips_per_shard)[3]]


@dataclass
class BuildResult:
    """What a build did: shards written now and kept from before, and the report of the whole build."""

    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def build_shards(
    folder: str | Path,
    plan: dict[str, Sequence],
    work: Callable[[object], dict | Skip],
    settings: dict,
    extra_columns: Sequence[str] = (),
    clips_per_shard: int = 1000,
    workers: int = 1,
    progress: bool = True,
    description: str = "clips",
) -> BuildResult:
    """Build (or finish building) `folder` from `plan`: {split: [task, ...]} in output order.

    `work(task)` returns a row (`audio_row`) or a `Skip`; it runs in worker processes when `workers` > 1, so it and the
    tasks must be picklable (a module-level function, or a `functools.partial` of one; tasks are dataclasses).
    `settings` (JSON-able) holds everything besides the tasks that changes the output (rate, seed, ...). The report is
    written to `build_report.json` and returned.
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    (folder / DATA_DIR).mkdir(parents=True, exist_ok=True)
    (folder / STATE_DIR).mkdir(exist_ok=True)
    features = audioset_features(extra_columns)
    shards, keys, state, pending = _progress(folder, plan, settings, features, clips_per_shard)
    result = BuildResult(removed=_remove_foreign_shards(folder, set(keys)))
    for name in set(state) - set(keys):
        _write_record(folder, name, None)
        del state[name]
    pending_names = {shard.name for shard in pending}
    result.kept = [shard.name for shard in shards if shard.name not in pending_names]
    bar = tqdm(total=sum(len(s.tasks) for s in pending), desc=description, unit="clip", disable=not progress)
    outputs = _results(work, (task for shard in pending for task in shard.tasks), workers)
    try:
        for shard in pending:
            rows, skips = [], []
            for _ in shard.tasks:
                out = next(outputs)
                (skips if isinstance(out, Skip) else rows).append(out)
                bar.update()
            size, digest = write_shard(folder, shard, rows, features)
            state[shard.name] = {
                "key": keys[shard.name],
                "size": size,
                "sha256": digest,
                "rows": len(rows),
                "skips": [dataclasses.asdict(skip) for skip in skips],
            }
            _write_record(folder, shard.name, state[shard.name])
            result.written.append(shard.name)
    finally:
        bar.close()
        outputs.close()  # ends the pool, also when a worker raised
    result.report = build_report(shards, state)
    write_json(folder / REPORT_FILE, result.report, indent=1, sort_keys=True)
    return result


def build_report(shards: Sequence[Shard], state: dict) -> dict:
    """Per split: clips planned and written, skips counted by kind and listed with their reasons."""
    splits: dict[str, dict] = {}
    for shard in shards:
        entry = state[shard.name]
        split = splits.setdefault(shard.split, {"planned": 0, "written": 0, "shards": 0, "skipped": {}, "skips": []})
        split["planned"] += len(shard.tasks)
        split["written"] += entry["rows"]
        split["shards"] += 1
        split["skips"] += entry["skips"]
        for skip in entry["skips"]:
            split["skipped"][skip["kind"]] = split["skipped"].get(skip["kind"], 0) + 1
    return {"splits": splits}


def report_summary(report: dict) -> str:
    """A few printable lines: per split, written / planned and skips by kind, then up to 5 skips of each kind."""
    lines = []
    for split, info in report["splits"].items():
        skipped = ", ".join(f"{n} {kind}" for kind, n in sorted(info["skipped"].items())) or "none skipped"
        lines.append(
            f"{split}: {info['written']} of {info['planned']} clips written in {info['shards']} shard(s); {skipped}"
        )
        for kind in sorted(info["skipped"]):
            listed = [s for s in info["skips"] if s["kind"] == kind]
            for skip in listed[:5]:
                lines.append(
                    f"  {kind}: {skip['video_id']} {skip['file'] or ''} ({skip['reason']})".replace("  (", " (")
                )
            if len(listed) > 5:
                lines.append(f"  ... {len(listed) - 5} more {kind}: see {REPORT_FILE}")
    return "\n".join(lines)


def split_counts(report: dict) -> dict[str, int]:
    return {split: info["written"] for split, info in report["splits"].items()}


def render_dataset_card(
    pretty_name: str,
    summary: str,
    report: dict,
    licence_id: str,
    licence: str,
    details: str = "",
    tags: Sequence[str] = (),
    template: str | Path | None = None,
) -> str:
    """The dataset card (`hub_cards/dataset_card.md`) of a build, from its report and the builder's texts."""
    from string import Template

    from huggingface_hub import DatasetCardData

    from ..hub.cards import read_template

    counts = split_counts(report)
    total = sum(counts.values())
    size = "n<1K" if total < 1000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000 else "n>100K"
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license=licence_id,
        task_categories=["audio-classification"],
        tags=["audioset", "multi-label", *tags],
        size_categories=[size],
    )
    rows = ["| split | clips | planned | skipped |", "|---|---:|---:|---|"]
    for split, info in report["splits"].items():
        skipped = ", ".join(f"{n} {kind}" for kind, n in sorted(info["skipped"].items())) or "0"
        rows.append(f"| {split} | {info['written']} | {info['planned']} | {skipped} |")
    text = Path(template).read_text(encoding="utf-8") if template else read_template("dataset_card.md")
    return Template(text).substitute(
        card_data=card_data.to_yaml(),
        pretty_name=pretty_name,
        summary=summary,
        splits_table="\n".join(rows),
        report_file=REPORT_FILE,
        data_dir=DATA_DIR,
        details=details,
        licence=licence,
    )


def push_build(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload a build folder as a dataset repo (the resume record stays local); the commit URL."""
    from ..hub.publish import push_to_hub

    return push_to_hub(
        folder,
        repo_id,
        private=private,
        message="Upload AudioSet-format build",
        repo_type="dataset",
        ignore_patterns=[f"{STATE_DIR}/*", f"{STATE_DIR}/**"],
    )
