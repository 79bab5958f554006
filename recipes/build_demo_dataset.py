"""Build a small synthetic dataset in the format of the Hub's `agkphysics/AudioSet`, offline and deterministic.

Each clip mixes 1-3 sound events (`modeling_spa.builds.synthetic`) at random onsets, lengths and levels over a faint
noise floor, and is stored as FLAC bytes. Columns mirror the Hub parquet: `video_id`, `audio`
(`Audio(decode=False)`: decode the FLAC bytes with soundfile), `labels` (AudioSet mids) and `human_labels`
(their display names).

Label rule for parents: an event of class c is always labelled c. For every direct ontology parent p of c that
is itself one of the demo classes, p is added with probability 0.5 (`PARENT_LABEL_PROBABILITY`), and, when it
is, the same rule is applied to p's parents. So "Police car (siren)" is labelled with "Siren" in about half of
its clips and with "Siren" and "Alarm" in about a quarter, like AudioSet, whose annotators added ancestor
labels only sometimes. An event of a parent class ("Siren") has its own, generic sound.

Layout written to OUTPUT (`datasets.load_dataset(OUTPUT)` finds the splits by their file names):
    README.md                                  dataset card
    classes.json                               the demo classes' mids and names in AudioSet CSV order, and
                                               how the set was built (speech included or not, parameters)
    data/{train,validation,test}-00000-of-00001.parquet

Usage: python recipes/build_demo_dataset.py --output /tmp/demo_ds [--num-train 1200 --seed 0 ...]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import soundfile as sf

from modeling_spa.builds import synthetic as demo_sounds
from modeling_spa.taxonomy import AudioSetOntology

SPLITS = ("train", "validation", "test")
_SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}  # part of every clip's seed: splits never share clips
PARENT_LABEL_PROBABILITY = 0.5
MIN_EVENT_S = 1.0
EVENT_RMS_DBFS = (-26.0, -16.0)
EVENT_MAX_PEAK = 0.8  # sparse sounds (ticks, claps) reach this peak before their RMS reaches the target
BACKGROUND_RMS_DBFS = (-62.0, -50.0)
MIX_MAX_PEAK = 0.95
FADE_S = 0.01
CLASSES_FILE = "classes.json"
DATA_DIR = "data"

FEATURES = datasets.Features(
    {
        "video_id": datasets.Value("string"),
        "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
        "labels": datasets.List(datasets.Value("string")),
        "human_labels": datasets.List(datasets.Value("string")),
    }
)


def parquet_name(split: str) -> str:
    """File name of one split, in the Hub's `{split}-{shard}-of-{count}` convention.

    `load_dataset(folder)` infers the splits from these names. The card deliberately has no `configs:` YAML:
    with one, datasets 5.2 keys its cache on the YAML alone, so a rebuilt folder (or another folder of the
    same name) would load the old cached clips.
    """
    return f"{split}-00000-of-00001.parquet"


def demo_classes(
    ontology: AudioSetOntology, names: Sequence[str] | None = None, speech: bool | None = None
) -> list[tuple[str, str]]:
    """(mid, display name) of the demo classes, in the order of the 527-label CSV.

    `names`: a subset of `demo_sounds.available_classes(speech)` (default: all of them).
    """
    available = demo_sounds.available_classes(speech)
    chosen = available if names is None else list(names)
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise ValueError(f"No demo sound for {unknown}; available: {available}")
    if len(chosen) < 2:
        raise ValueError("A demo dataset needs at least two classes.")
    wanted = set(chosen)
    return [(mid, name) for mid, name in zip(ontology.label_mids, ontology.label_names, strict=True) if name in wanted]


def registered_parents(ontology: AudioSetOntology, mids: Sequence[str]) -> dict[str, list[str]]:
    """For each mid, its direct ontology parents that are demo classes too (ontology file order)."""
    present = set(mids)
    return {mid: [p for p in ontology.nodes[mid].parents if p in present] for mid in mids}


def clip_labels(
    rng: np.random.Generator,
    event_mids: Sequence[str],
    parents: dict[str, list[str]],
    probability: float = PARENT_LABEL_PROBABILITY,
) -> set[str]:
    """The events' mids plus ancestors added by the parent rule (see the module docstring)."""
    labels = set(event_mids)
    pending = list(event_mids)
    while pending:
        mid = pending.pop(0)
        for parent in parents[mid]:
            # one draw per (child, parent) edge, also when the parent is already there, to keep draws aligned
            if rng.random() < probability and parent not in labels:
                labels.add(parent)
                pending.append(parent)
    return labels


def plan_events(rng: np.random.Generator, num_classes: int, first: int, max_events: int) -> list[int]:
    """Class indices of a clip's events: `first`, then 0 to max_events - 1 other, distinct classes."""
    count = int(rng.integers(1, min(max_events, num_classes) + 1))
    others = rng.choice(np.delete(np.arange(num_classes), first), size=count - 1, replace=False)
    return [first, *(int(i) for i in others)]


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def _fade(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Short linear fades so that an event cut out of a longer sound does not start or stop with a click."""
    length = min(int(FADE_S * sample_rate), audio.size // 2)
    if length > 0:
        ramp = np.linspace(0.0, 1.0, length, endpoint=False)
        audio[:length] *= ramp
        audio[-length:] *= ramp[::-1]
    return audio


def mix_clip(rng: np.random.Generator, names: Sequence[str], duration_s: float, sample_rate: int) -> np.ndarray:
    """A clip of `duration_s` with one event per name, at random onset, length and level, over faint noise."""
    n = demo_sounds.num_samples(duration_s, sample_rate)
    floor = demo_sounds.colored_noise(rng, n, rng.uniform(0.0, 1.5))
    mix = floor * 10 ** (rng.uniform(*BACKGROUND_RMS_DBFS) / 20)
    for name in names:
        length_s = rng.uniform(min(MIN_EVENT_S, duration_s), duration_s)
        start = int(round(rng.uniform(0.0, duration_s - length_s) * sample_rate))
        event = _fade(demo_sounds.synthesize(name, rng, length_s, sample_rate).astype(np.float64), sample_rate)
        event = event[: n - start]
        target = 10 ** (rng.uniform(*EVENT_RMS_DBFS) / 20)
        mix[start : start + event.size] += event * min(target / max(_rms(event), 1e-9), EVENT_MAX_PEAK)
    peak = float(np.max(np.abs(mix)))
    return (mix * min(1.0, MIX_MAX_PEAK / peak)).astype(np.float32)


def encode_flac(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit mono FLAC bytes, in memory."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Each clip has its own generator: a clip does not change when other clips or splits change size."""
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def build_split(
    split: str,
    count: int,
    classes: Sequence[tuple[str, str]],
    parents: dict[str, list[str]],
    sample_rate: int,
    duration_s: float,
    seed: int,
    max_events: int = 3,
) -> datasets.Dataset:
    """`count` clips of one split. The first event of clip i cycles through a shuffled class list, so that
    every class has positives in every split of at least len(classes) clips."""
    order = np.random.default_rng([seed, _SPLIT_CODES[split], 2**32 - 1]).permutation(len(classes))
    rows: dict[str, list] = {"video_id": [], "audio": [], "labels": [], "human_labels": []}
    name_of = dict(classes)
    position = {mid: i for i, (mid, _) in enumerate(classes)}
    for index in range(count):
        rng = clip_rng(seed, split, index)
        events = [classes[i][0] for i in plan_events(rng, len(classes), int(order[index % len(classes)]), max_events)]
        labels = sorted(clip_labels(rng, events, parents), key=position.__getitem__)
        audio = mix_clip(rng, [name_of[mid] for mid in events], duration_s, sample_rate)
        video_id = f"synth_{split}_{index:06d}"
        rows["video_id"].append(video_id)
        rows["audio"].append({"bytes": encode_flac(audio, sample_rate), "path": f"{video_id}.flac"})
        rows["labels"].append(labels)
        rows["human_labels"].append([name_of[mid] for mid in labels])
    dataset = datasets.Dataset.from_dict(rows, features=FEATURES, split=datasets.NamedSplit(split))
    return dataset.cast_column("audio", datasets.Audio(decode=False))


def _card(classes: Sequence[tuple[str, str]], ontology: AudioSetOntology, info: dict, counts: dict[str, int]) -> str:
    table = "\n".join(
        f"| {mid} | {name} | {ontology.nodes[ontology.top_level(mid)].name} | "
        f"{', '.join(ontology.nodes[p].name for p in registered_parents(ontology, [m for m, _ in classes])[mid])} |"
        for mid, name in classes
    )
    speech = info["speech"]
    return f"""---
license: cc-by-sa-4.0
pretty_name: SPA synthetic AudioSet-format demo
task_categories:
- audio-classification
tags:
- audioset
- synthetic
- multi-label
---

# SPA demo: synthetic sounds in AudioSet format

{sum(counts.values())} synthetic clips ({", ".join(f"{split} {n}" for split, n in counts.items())}) of
{info["duration_s"]} s at {info["sample_rate"]} Hz, mono 16-bit FLAC, for {len(classes)} real AudioSet classes.
Built offline by `recipes/build_demo_dataset.py` (seed {info["seed"]}) for the `make demo` run of the SPA project;
it is not AudioSet and no result on it says anything about AudioSet.

Columns mirror `agkphysics/AudioSet`: `video_id` (string), `audio` (`Audio(decode=False)`: FLAC bytes, decode
with soundfile), `labels` (AudioSet mids), `human_labels` (display names).
Load it with `datasets.load_dataset("<this folder>")`: the splits come from the file names
`{DATA_DIR}/<split>-00000-of-00001.parquet`.

Each clip mixes 1 to {info["max_events"]} sound events of distinct classes at random onsets, lengths and levels
over a faint noise floor. An event's own class is always a label; each direct ontology parent that is also a demo
class is added with probability {info["parent_label_probability"]}, recursively (AudioSet annotators added
ancestors only sometimes). `classes.json` lists the mids in the 527-label order, to restrict a classifier to
these classes.

Speech classes: {"included (espeak-ng)" if speech["included"] else "not included"} ({speech["reason"]}).

| mid | name | top-level category | parent classes in this set |
| --- | --- | --- | --- |
{table}

## License
The audio is synthetic, generated by code, and dedicated to the public domain (CC0 1.0). The label names and
mids come from the AudioSet ontology by Google, CC BY-SA 4.0, so the dataset as a whole is shared under
CC BY-SA 4.0.
"""


def _speech_setting(speech: bool | None) -> dict:
    found = demo_sounds.speech_available()
    included = found if speech is None else bool(speech)
    if included:
        reason = "espeak-ng found on PATH"
    elif speech is False:
        reason = "left out on request"
    else:
        reason = "espeak-ng not found on PATH, speech classes skipped"
    return {"included": included, "reason": reason}


def _clear_outputs(output_dir: Path) -> None:
    """Remove the files an earlier build wrote, so that no stale shard is picked up by `data/{split}-*`."""
    for path in [output_dir / "README.md", output_dir / CLASSES_FILE, *output_dir.glob(f"{DATA_DIR}/*.parquet")]:
        path.unlink(missing_ok=True)


def build_demo_dataset(
    output_dir: str | Path,
    num_train: int = 1200,
    num_validation: int = 300,
    num_test: int = 300,
    sample_rate: int = 16000,
    duration_s: float = 4.0,
    seed: int = 0,
    max_events: int = 3,
    class_names: Sequence[str] | None = None,
    speech: bool | None = None,
    ontology: AudioSetOntology | None = None,
) -> datasets.DatasetDict:
    """Write the demo dataset to `output_dir` (layout: module docstring) and return it.

    The same arguments give byte-identical parquet files. `speech`: None uses espeak-ng when it is on PATH,
    True requires it, False leaves speech out; `class_names` restricts the classes (default: all available).
    """
    if duration_s <= 0 or sample_rate <= 0 or max_events < 1:
        raise ValueError("duration_s, sample_rate and max_events must be positive.")
    counts = {"train": num_train, "validation": num_validation, "test": num_test}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"Split sizes must be non-negative, got {counts}.")
    ontology = ontology or AudioSetOntology.load()
    classes = demo_classes(ontology, class_names, speech)
    parents = registered_parents(ontology, [mid for mid, _ in classes])
    info = {
        "seed": seed,
        "sample_rate": sample_rate,
        "duration_s": duration_s,
        "max_events": max_events,
        "parent_label_probability": PARENT_LABEL_PROBABILITY,
        "num_clips": counts,
        "speech": _speech_setting(speech),
    }
    splits = {
        split: build_split(split, counts[split], classes, parents, sample_rate, duration_s, seed, max_events)
        for split in SPLITS
    }
    output_dir = Path(output_dir)
    (output_dir / DATA_DIR).mkdir(parents=True, exist_ok=True)
    _clear_outputs(output_dir)
    for split, dataset in splits.items():
        dataset.to_parquet(str(output_dir / DATA_DIR / parquet_name(split)))
    listing = {"mids": [mid for mid, _ in classes], "names": [name for _, name in classes], "build": info}
    (output_dir / CLASSES_FILE).write_text(json.dumps(listing, indent=2) + "\n", encoding="utf-8")
    (output_dir / "README.md").write_text(_card(classes, ontology, info, counts), encoding="utf-8")
    return datasets.DatasetDict(splits)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output", required=True, type=Path, help="folder to write (files of an older build in it are replaced)"
    )
    parser.add_argument("--num-train", type=int, default=1200)
    parser.add_argument("--num-validation", type=int, default=300)
    parser.add_argument("--num-test", type=int, default=300)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--duration", type=float, default=4.0, help="clip length in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-events", type=int, default=3, help="most sound events in one clip")
    parser.add_argument("--classes", nargs="+", default=None, help="restrict to these class display names")
    parser.add_argument(
        "--speech", choices=("auto", "on", "off"), default="auto", help="speech classes via espeak-ng (auto: if found)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    dataset = build_demo_dataset(
        args.output,
        num_train=args.num_train,
        num_validation=args.num_validation,
        num_test=args.num_test,
        sample_rate=args.sample_rate,
        duration_s=args.duration,
        seed=args.seed,
        max_events=args.max_events,
        class_names=args.classes,
        speech={"auto": None, "on": True, "off": False}[args.speech],
    )
    classes = json.loads((args.output / CLASSES_FILE).read_text(encoding="utf-8"))
    print(dataset)
    print(f"{len(classes['mids'])} classes; speech: {classes['build']['speech']['reason']}")
    print(f"wrote {args.output} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
