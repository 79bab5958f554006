"""Build an AudioSet-format set of real recordings, offline, from the Debian packages in the project's manifest.

    python recipes/build_real_sounds.py [--output outputs/real_sounds] [--cache DIR] [--rate 16000] [--duration 2]
        [--num-train 1000 --num-validation 200 --num-test 200] [--seed 0] [--min-recordings 5] [--max-speech 40]

Inputs, committed: `recipes/real_sounds/manifest.tsv` (one row per recording: package, path in the package, labels
as mids, licence, confidence, sha256 of the decoded audio; reviewed in `recipes/real_sounds/REVIEW.md`) and
`recipes/real_sounds/packages.tsv` (the pinned .deb versions and their sha256). No audio is committed: the .deb
files are fetched into the cache with `apt-get download` (or put there by hand), verified, and read without
installing; GCompris' sounds come out of its Qt resource bundles.

Outputs, two AudioSet-format builds (`load_audioset(DIR, split)`; `recipes/train.py --dataset DIR --classes
DIR/classes.json`), both with the extra columns `source` and `licence`:
    OUTPUT/sources/    one row per recording, split into disjoint train / validation / test pools of recordings
                       (`modeling_spa.builds.mixtures`); labels as reviewed; clips shorter than 0.5 s padded with
                       silence
    OUTPUT/mixtures/   `--num-*` clips of `--duration` s per split: 1-3 recordings of that split's pool at random
                       levels, offsets and crops over a faint noise floor, labelled with the union of their labels
                       over the target classes (classes with at least `--min-recordings` recordings and some in
                       every pool)
Everything is resampled once, to `--rate`, and seeded: the same inputs give byte-identical shards. A build whose
inputs and arguments have not changed does nothing; an interrupted one continues (`modeling_spa.builds.shards`).
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modeling_spa.builds.debian import extract_members, fetch_packages, read_pins
from modeling_spa.builds.mixtures import (
    POOLS,
    MixturePlanner,
    Recording,
    assign_pools,
    load_waves,
    mixture_row,
    target_classes,
)
from modeling_spa.builds.qt_rcc import read_rcc
from modeling_spa.builds.shards import (
    FORMAT_VERSION,
    ClipTask,
    build_shards,
    encode_clip,
    pending_shards,
    read_audio,
    render_dataset_card,
    report_summary,
    shard_records,
)
from modeling_spa.taxonomy import AudioSetOntology

HERE = Path(__file__).resolve().parent / "real_sounds"
MANIFEST = HERE / "manifest.tsv"
PACKAGES = HERE / "packages.tsv"
BUNDLE_SEPARATOR = "#"  # "usr/share/gcompris-qt/rcc/x.rcc#path/inside/bundle.ogg"
SPEECH_PACKAGE = "asterisk-core-sounds-en-wav"
MIN_SOURCE_S = 0.5
EXTRA_COLUMNS = ("source", "licence")
CLASSES_FILE = "classes.json"
STAMP_FILE = "build_stamp.json"
# Bump when this recipe's output changes for the same inputs (mixing, cards): the next build then redoes its work.
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Clip:
    """One manifest row."""

    id: str
    package: str
    path: str
    labels: tuple[str, ...]
    licence: str
    confidence: str
    sha256: str
    row: dict


def read_manifest(path: str | Path, ontology: AudioSetOntology) -> list[Clip]:
    """The manifest's rows; an unknown mid, an unsafe path or a row without licence is an error naming the row."""
    known = set(ontology.label_mids)
    clips = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle, delimiter="\t"), start=2):
            where = f"{Path(path).name}:{number} ({row['id']})"
            labels = tuple(row["labels"].split(";"))
            unknown = [mid for mid in labels if mid not in known]
            if unknown:
                raise ValueError(f"{where}: labels {unknown} are not AudioSet labels")
            if row["path"].startswith("/") or ".." in row["path"].split("/"):
                raise ValueError(f"{where}: unsafe path {row['path']!r}")
            if not row["licence"].strip():
                raise ValueError(f"{where}: no licence")
            clip = Clip(row["id"], row["package"], row["path"], labels, row["licence"], row["confidence"],
                        row["sha256"], row)  # fmt: skip
            clips.append(clip)
    duplicates = [i for i, n in Counter(c.id for c in clips).items() if n > 1]
    if duplicates:
        raise ValueError(f"{path}: clip ids listed twice: {duplicates[:5]}")
    return clips


def select(clips: Sequence[Clip], max_speech: int, seed: int) -> tuple[list[Clip], list[Clip]]:
    """(used, left out): the 8 kHz telephone prompts are capped at `max_speech`, chosen by a seeded draw."""
    speech = [c for c in clips if c.package == SPEECH_PACKAGE]
    keep = {speech[i].id for i in np.random.default_rng([seed, 8000]).permutation(len(speech))[:max_speech]}
    used = [c for c in clips if c.package != SPEECH_PACKAGE or c.id in keep]
    return used, [c for c in clips if c.package == SPEECH_PACKAGE and c.id not in keep]


def recordings(clips: Sequence[Clip]) -> list[Recording]:
    """Clips with the same decoded audio (equal sha256) are one recording group: they share a pool."""
    return [Recording(c.id, c.sha256 or c.id, c.labels) for c in clips]


def extracted_path(cache: Path, clip: Clip) -> Path:
    return cache / "extracted" / clip.package / clip.path


def extract(cache: Path, clips: Sequence[Clip], debs: dict[str, Path]) -> None:
    """Unpack the clips' files (and bundles) from their packages, once per package version."""
    for package, deb in sorted(debs.items()):
        stamp = cache / "extracted" / package / ".extracted"
        wanted = sorted({c.path for c in clips if c.package == package})
        record = json.dumps({"deb": deb.name, "files": wanted})
        if not wanted or (stamp.is_file() and stamp.read_text() == record):
            continue
        members = {path.split(BUNDLE_SEPARATOR)[0] for path in wanted}
        found = extract_members(deb, members, cache / "extracted" / package)
        for path in wanted:
            if BUNDLE_SEPARATOR in path:
                bundle, inner = path.split(BUNDLE_SEPARATOR, 1)
                files = read_rcc(found[bundle].read_bytes(), bundle)
                if inner not in files:
                    raise FileNotFoundError(f"{deb.name}: {bundle} holds no {inner}")
                target = cache / "extracted" / package / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(files[inner])
        stamp.write_text(record)


def audio_sha256(path: Path) -> tuple[str, float, int]:
    """sha256 of the decoded samples as 16-bit PCM (frames x channels), the duration and the rate.

    16-bit integers, not floats, so that decoders that differ in the last float bit still agree.
    """
    samples, rate = read_audio(path)
    pcm = np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2")
    return hashlib.sha256(pcm.tobytes()).hexdigest(), len(samples) / rate, rate


def check_hashes(cache: Path, clips: Sequence[Clip]) -> list[dict]:
    """Clips whose decoded audio differs from the manifest's sha256 (or cannot be decoded): listed, not fatal."""
    problems = []
    for clip in clips:
        try:
            digest = audio_sha256(extracted_path(cache, clip))[0]
        except Exception as err:  # reported with the clip; the build itself skips and lists it too
            problems.append({"id": clip.id, "problem": f"cannot decode: {err}"})
            continue
        if clip.sha256 and digest != clip.sha256:
            problems.append({"id": clip.id, "problem": f"decoded audio sha256 {digest} != manifest {clip.sha256}"})
    return problems


def sources_plan(clips: Sequence[Clip], pools: dict[str, str], cache: Path, names: dict[str, str]) -> dict:
    plan = {pool: [] for pool in POOLS}
    for clip in clips:
        extra = (("source", f"{clip.package}:{clip.path}"), ("licence", clip.licence))
        task = ClipTask(clip.id, clip.labels, tuple(names[m] for m in clip.labels),
                        str(extracted_path(cache, clip)), clip.sha256 or clip.path, extra)  # fmt: skip
        plan[pools[clip.id]].append(task)
    return plan


def mixtures_plan(args, clips, pools, classes, names, waves) -> dict:
    licence = {c.id: c.licence for c in clips}
    counts = {"train": args.num_train, "validation": args.num_validation, "test": args.num_test}
    plan = {}
    for pool in POOLS:
        members = [Recording(r.id, r.group, tuple(m for m in r.labels if m in classes))
                   for r in recordings(clips) if pools[r.id] == pool and r.id in waves]  # fmt: skip
        members = [r for r in members if r.labels]
        planner = MixturePlanner(waves, members, classes, names, licence, args.rate, args.duration, args.seed,
                                 args.max_sources, not args.no_background)  # fmt: skip
        plan[pool] = planner.plan(pool, counts[pool])
    return plan


def write_classes(folder: Path, mids: Sequence[str], ontology: AudioSetOntology, info: dict) -> None:
    names = dict(zip(ontology.label_mids, ontology.label_names, strict=True))
    listing = {"mids": list(mids), "names": [names[m] for m in mids], "build": info}
    (folder / CLASSES_FILE).write_text(json.dumps(listing, indent=1) + "\n", encoding="utf-8")


def licence_table(clips: Sequence[Clip], pools: dict[str, str]) -> str:
    rows = ["| recording | pool | licence | source |", "|---|---|---|---|"]
    rows += [f"| {c.id} | {pools[c.id]} | {c.licence} | `{c.package}`: `{c.path}` |" for c in clips]
    return "\n".join(rows)


LICENCE = (
    "Each clip keeps the licence of its recordings, given per clip in the `licence` column and per recording in the "
    "table above: CC0, CC-BY, CC-BY-SA, Free Art, GPL-2+/GPL-3+ (as the Debian packages' copyright files state). The "
    "share-alike and GPL terms apply to redistributed clips; this folder is a local build and is not part of the SPA "
    "repository. Label names come from the AudioSet ontology (© Google, CC BY-SA 4.0)."
)


CAVEATS = (
    "Speech comes mostly from one speaker's 8 kHz telephone prompts (Asterisk; a capped, seeded draw) and the spoken "
    "channel names of a desktop sound theme: nothing above 4 kHz in the former, a domain shift for wide-band audio. "
    "Recordings shorter than 0.5 s (drum hits, tabla strokes) are never looped; in the source set they are padded "
    "with silence to 0.5 s. Labels were reviewed without listening (file names, copyright files, decoded-audio "
    "hashes); confidence M rows are inferred from names. These are small, clean, mostly studio recordings from "
    "educational and music software, not AudioSet: results on them say little about AudioSet.\n\n"
)


def stamp_inputs(args, manifest: Path, packages: Path) -> str:
    """What both builds depend on: the committed inputs and every argument that changes the output."""
    keys = ("rate", "duration", "num_train", "num_validation", "num_test", "seed", "min_recordings", "max_speech",
            "max_sources", "no_background")  # fmt: skip
    record = {k: getattr(args, k) for k in keys} | {"recipe": RECIPE_VERSION, "format": FORMAT_VERSION}
    record["manifest"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    record["packages"] = hashlib.sha256(packages.read_bytes()).hexdigest()
    record["cache"] = str(Path(args.cache).resolve())
    return json.dumps(record, sort_keys=True)


def up_to_date(output: Path, stamp: str) -> bool:
    path = output / STAMP_FILE
    return path.is_file() and path.read_text(encoding="utf-8") == stamp


def build_real_sounds(args, ontology: AudioSetOntology | None = None, manifest: Path = MANIFEST,
                      packages: Path = PACKAGES) -> dict:  # fmt: skip
    """Build (or finish) both sets; the summary (also written to OUTPUT/build_report.json)."""
    output, cache = Path(args.output), Path(args.cache)
    stamp = stamp_inputs(args, manifest, packages)
    if up_to_date(output, stamp):
        summary = json.loads((output / "build_report.json").read_text(encoding="utf-8"))
        return {**summary, "up_to_date": True}
    ontology = ontology or AudioSetOntology.load()
    names = dict(zip(ontology.label_mids, ontology.label_names, strict=True))
    clips, left_out = select(read_manifest(manifest, ontology), args.max_speech, args.seed)
    pools = assign_pools(recordings(clips), args.seed, args.min_recordings)
    order = {mid: i for i, mid in enumerate(ontology.label_mids)}
    classes = sorted(target_classes(recordings(clips), pools, args.min_recordings), key=order.__getitem__)
    plan = sources_plan(clips, pools, cache, names)
    settings = {"rate": args.rate, "min_seconds": MIN_SOURCE_S, "builder": "real_sounds/sources"}
    hash_problems = []
    if pending_shards(output / "sources", plan, settings, EXTRA_COLUMNS, clips_per_shard=500):
        pins = read_pins(packages)
        used = sorted({c.package for c in clips})
        unknown = [p for p in used if p not in pins]
        if unknown:
            raise ValueError(f"{packages}: no pinned version for package(s) {unknown}")
        debs = fetch_packages([pins[p] for p in used], cache / "debs")
        extract(cache, clips, debs)
        hash_problems = check_hashes(cache, clips)
    work = functools.partial(encode_clip, rate=args.rate, min_seconds=MIN_SOURCE_S)
    sources = build_shards(output / "sources", plan, work, settings, EXTRA_COLUMNS, clips_per_shard=500,
                           workers=args.workers, progress=not args.no_progress, description="sources")  # fmt: skip
    present = sorted({m for c in clips for m in c.labels}, key=order.__getitem__)
    info = {"rate": args.rate, "seed": args.seed, "pools": dict(Counter(pools.values())), "target_classes": classes}
    write_classes(output / "sources", present, ontology, info)

    waves = load_waves(str(output / "sources"), args.rate)
    mixtures = mixtures_plan(args, clips, pools, classes, names, waves)
    records = shard_records(output / "sources")
    mix_settings = {"rate": args.rate, "sources": {name: record["sha256"] for name, record in records.items()}}
    work = functools.partial(mixture_row, sources_dir=str(output / "sources"), rate=args.rate)
    mixed = build_shards(output / "mixtures", mixtures, work, mix_settings, EXTRA_COLUMNS, clips_per_shard=500,
                         workers=args.workers, progress=not args.no_progress, description="mixtures")  # fmt: skip
    write_classes(output / "mixtures", classes, ontology, {**info, "duration_s": args.duration})

    summary = package_summary(clips, left_out, sources.report)
    report = {"packages": summary, "hash_problems": hash_problems, "target_classes": [names[m] for m in classes],
              "pools": info["pools"], "sources": sources.report, "mixtures": mixed.report}  # fmt: skip
    write_cards(output, clips, pools, classes, names, sources.report, mixed.report, args)
    (output / "build_report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (output / STAMP_FILE).write_text(stamp, encoding="utf-8")
    return {**report, "up_to_date": False}


def package_summary(clips: Sequence[Clip], left_out: Sequence[Clip], report: dict) -> dict:
    """Per package: manifest rows, rows used, clips written, and the skips with their reasons."""
    skips = {s["video_id"]: s for info in report["splits"].values() for s in info["skips"]}
    summary: dict[str, dict] = {}
    for clip in [*clips, *left_out]:
        entry = summary.setdefault(clip.package, {"manifest": 0, "used": 0, "written": 0, "skipped": []})
        entry["manifest"] += 1
    for clip in clips:
        entry = summary[clip.package]
        entry["used"] += 1
        if clip.id in skips:
            entry["skipped"].append({"id": clip.id, "reason": skips[clip.id]["reason"]})
        else:
            entry["written"] += 1
    return summary


def write_cards(output, clips, pools, classes, names, sources_report, mixtures_report, args) -> None:
    sources_text = (
        f"{len(clips)} real recordings from seven Debian packages, one row per recording, resampled once to "
        f"{args.rate} Hz mono. The splits are disjoint pools of recordings (train / validation / test); labels are "
        "the project's reviewed AudioSet labels (`recipes/real_sounds/manifest.tsv` in the SPA repository)."
    )
    mix_text = (
        f"Multi-label mixtures of {args.duration} s at {args.rate} Hz: 1 to {args.max_sources} real recordings of "
        f"the split's own pool (so the test split holds only recordings never heard in training), labelled with "
        f"{len(classes)} AudioSet classes: {'; '.join(names[m] for m in classes)}."
    )
    for folder, title, text, report in (
        ("sources", "SPA real sounds: source recordings", sources_text, sources_report),
        ("mixtures", "SPA real sounds: mixtures", mix_text, mixtures_report),
    ):
        details = "Columns `source` (the recording(s): package and path) and `licence` (per clip).\n\n" + CAVEATS
        details += "## Recordings and licences\n" + licence_table(clips, pools)
        card = render_dataset_card(title, text, report, "other", LICENCE, details=details, tags=["real-recordings"])
        (output / folder / "README.md").write_text(card, encoding="utf-8")


def record_hashes(args, ontology: AudioSetOntology | None = None, manifest: Path = MANIFEST) -> int:
    """Maintainers: rewrite the manifest's sha256 / duration / rate columns from the extracted audio."""
    ontology = ontology or AudioSetOntology.load()
    clips = read_manifest(manifest, ontology)
    pins = read_pins(PACKAGES)
    debs = fetch_packages([pins[p] for p in sorted({c.package for c in clips})], Path(args.cache) / "debs")
    extract(Path(args.cache), clips, debs)
    rows = []
    for clip in clips:
        row = dict(clip.row)
        try:
            digest, duration, rate = audio_sha256(extracted_path(Path(args.cache), clip))
            row.update(sha256=digest, duration_s=f"{duration:.6f}", sample_rate=str(rate))
        except Exception as err:  # listed; the row stays without a hash
            print(f"{clip.id}: cannot decode ({err})")
        rows.append(row)
    with open(manifest, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return 0


def default_cache() -> Path:
    return Path(os.environ.get("SPA_CACHE", Path.home() / ".cache" / "modeling_spa")) / "real_sounds"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("outputs/real_sounds"))
    parser.add_argument("--cache", type=Path, default=default_cache(), help="where .deb files and extracted audio go")
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument("--duration", type=float, default=2.0, help="mixture length in seconds")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-validation", type=int, default=200)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-recordings", type=int, default=5, help="recordings a target class needs")
    parser.add_argument("--max-speech", type=int, default=40, help="8 kHz Asterisk prompts used (of 568)")
    parser.add_argument("--max-sources", type=int, default=3, help="most recordings in one mixture")
    parser.add_argument("--no-background", action="store_true", help="no faint noise floor under the mixtures")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--record-hashes", action="store_true", help="maintainers: refresh the manifest's sha256s")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.record_hashes:
        return record_hashes(args)
    started = time.perf_counter()
    report = build_real_sounds(args)
    if report["up_to_date"]:
        print(f"{args.output}: up to date (inputs and arguments unchanged); nothing to do.")
        return 0
    for package, info in report["packages"].items():
        reasons = "; ".join(f"{s['id']}: {s['reason']}" for s in info["skipped"]) or "none skipped"
        print(f"{package}: {info['manifest']} in manifest, {info['used']} used, {info['written']} written ({reasons})")
    for problem in report["hash_problems"]:
        print(f"audio check: {problem['id']}: {problem['problem']}")
    print(f"pools: {report['pools']}; {len(report['target_classes'])} target classes: {report['target_classes']}")
    print("sources:\n" + report_summary(report["sources"]))
    print("mixtures:\n" + report_summary(report["mixtures"]))
    print(f"built {args.output} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
