"""Event timelines measured on real recordings with known boundaries: event-based and segment-based F1 (sed_eval).

    python recipes/event_study.py --model outputs/events-model/model --sources outputs/real_sounds/sources \
        --output recipes/results/event_study.json [--work_dir outputs/event_study] [--rounds 2]

The real-recording set's source recordings (one row per recording, AudioSet mids) of the validation and test pools,
restricted to the classes the model knows, are laid end to end in shuffled order with silences of 0.5-2.5 s and, for
30 % of them, an overlap with the previous one (`modeling_spa.tagging.scenes.compose_scene`), `--rounds` times with
different seeds; the scenes are written as WAV files with their reference events (TSV). Each scene is tagged with
`file_window_scores` at every hop of `--hops`, and the window scores go through every post-processing setting of
the grid below (thresholds 0.5 or the checkpoint's calibrated ones, hysteresis, median filter, minimum gap and
duration). The setting with the best event-based F1 (1 s collar) on the validation pool is reported on the test
pool, beside a plain baseline (hop = window, threshold 0.5, nothing else) and the best setting of each hop; also at
ontology levels 0 and 1 (reference labels mapped to their ancestors there). Event-based F1: onset within the collar
(0.2 s as in DCASE, and 1 s), offset within max(collar, 20 % of the event); segment-based: 1 s segments.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import soundfile

from modeling_spa import SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.data import decode_audio, load_audioset
from modeling_spa.files import sha256_of_file, write_json
from modeling_spa.tagging.events import Event, EventRules, events_tsv
from modeling_spa.tagging.hierarchy import LabelHierarchy
from modeling_spa.tagging.scenes import Recording, compose_scene, sed_eval_scores
from modeling_spa.tagging.timeline import WindowScores, event_classes, events_from_windows, file_window_scores
from modeling_spa.windowing import window_settings

POOLS = ("validation", "test")
# 0.2 s is DCASE's collar; a clip tagger's 2 s windows place boundaries more coarsely, so 1 s is reported too and
# chooses the setting (at 0.2 s most settings score near zero on validation, and the choice would be noise).
COLLARS_S = (0.2, 1.0)
SELECT_COLLAR = "1"
GRID = {
    "threshold": ("0.5", "auto"),
    "off_ratio": (1.0, 0.5),
    "median_windows": (1, 3, 5),
    "min_gap_s": (0.0, 0.5),
    "min_duration_s": (0.0, 0.5),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--sources", default="outputs/real_sounds/sources")
    parser.add_argument("--output", default="recipes/results/event_study.json")
    parser.add_argument("--work_dir", default="outputs/event_study")
    parser.add_argument("--hops", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="besides hop = window")
    parser.add_argument("--rounds", type=int, default=2, help="scenes per pool (each holds every recording once)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def pool_recordings(sources: str, pool: str, model) -> list[Recording]:
    """The pool's recordings with their labels among the model's classes (names); the others are left out."""
    names = dict(zip(model.config.label_mids, model.config.label_names, strict=True))
    rate = model.config.frontend["sampling_rate"]
    recordings = []
    for row in load_audioset(sources, pool):
        labels = tuple(names[mid] for mid in row["labels"] if mid in names)
        if labels:
            recordings.append(Recording(row["video_id"], decode_audio(row["audio"], rate, row["video_id"]), labels))
    return recordings


def write_scenes(recordings: list[Recording], pool: str, args, rate: int) -> dict[str, dict]:
    """`--rounds` scenes of the pool as WAV + reference TSV under WORK_DIR/scenes; name -> {path, events, ...}."""
    folder = Path(args.work_dir) / "scenes"
    folder.mkdir(parents=True, exist_ok=True)
    scenes = {}
    for round_ in range(args.rounds):
        rng = np.random.default_rng([args.seed, POOLS.index(pool), round_])
        order = [recordings[i] for i in rng.permutation(len(recordings))]
        scene = compose_scene(order, rate, rng)
        name = f"{pool}_{round_}"
        soundfile.write(folder / f"{name}.wav", scene.audio, rate, subtype="FLOAT")
        (folder / f"{name}.reference.tsv").write_text(events_tsv(scene.events))
        scenes[name] = {"path": str(folder / f"{name}.wav"), "events": scene.events, "duration_s": scene.duration_s}
    return scenes


def window_scores(path: str, model, extractor, hop: float, cache: Path) -> list[WindowScores]:
    """The scene's window scores at `hop`, cached (scoring is the slow part; the grid is not). `cache` is named after
    the model's weights, so another checkpoint never reads this one's scores."""
    stored = cache / f"{Path(path).stem}_hop{hop:g}.npz"
    if stored.is_file():
        data = np.load(stored)
        return [WindowScores(*row) for row in zip(data["starts"], data["ends"], data["scores"], strict=True)]
    windows = list(file_window_scores(path, model, extractor, hop))
    np.savez(stored, starts=[w.start for w in windows], ends=[w.end for w in windows],
             scores=np.stack([w.scores for w in windows]))  # fmt: skip
    return windows


def level_reference(events: list[Event], hierarchy: LabelHierarchy, level: int, names: list[str]) -> list[Event]:
    """Reference events at an ontology level: each event under every tag of that level at or above its class."""
    index = {name: i for i, name in enumerate(names)}
    tags = hierarchy.level_nodes(level)
    found = {Event(hierarchy.node_names[n], e.onset, e.offset, 1.0) for e in events for n in tags
             if index[e.label] in hierarchy.members[n]}  # fmt: skip
    return sorted(found, key=lambda e: (e.onset, e.label))


def evaluate(scenes, scores, model, setting: dict, level: int | None = None, hierarchy=None) -> dict:
    """sed_eval figures of one setting over a pool's scenes (`scores`: scene name -> window scores at its hop)."""
    rules = EventRules(setting["median_windows"], setting["off_ratio"], setting["min_duration_s"], setting["min_gap_s"])
    classes = event_classes(model.config, setting["threshold"], level, hierarchy.ontology if hierarchy else None)
    estimated = {name: events_from_windows(iter(scores[name]), classes, rules) for name in scenes}
    reference = {name: scene["events"] for name, scene in scenes.items()}
    if level is not None:
        names = model.config.label_names
        reference = {name: level_reference(events, hierarchy, level, names) for name, events in reference.items()}
    return sed_eval_scores(reference, estimated, classes.labels, COLLARS_S)


def provenance(args, argv: list[str], model_sha256: str) -> dict:
    """What the figures depend on besides this file: the command, the checkpoint's weights, the real-recording build
    (its stamp names the sources' manifest and the build settings) and the scoring library's version."""
    stamp = Path(args.sources).parent / "build_stamp.json"
    return {
        "command": " ".join(["python", "recipes/event_study.py", *argv]),
        "arguments": vars(args),
        "model_sha256": model_sha256,
        "real_sounds_build": json.loads(stamp.read_text()) if stamp.is_file() else None,
        "sed_eval": importlib.metadata.version("sed_eval"),
    }


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    model = SPAForAudioClassification.from_pretrained(args.model).eval()
    extractor = SPAFeatureExtractor.from_pretrained(args.model)
    rate = extractor.sampling_rate
    window = window_settings(model.config).length / rate
    hops = sorted({*args.hops, window})
    model_sha256 = sha256_of_file(Path(args.model) / "model.safetensors")
    cache = Path(args.work_dir) / "window_scores" / model_sha256[:16]
    cache.mkdir(parents=True, exist_ok=True)
    pools, scores = {}, {}
    for pool in POOLS:
        recordings = pool_recordings(args.sources, pool, model)
        pools[pool] = write_scenes(recordings, pool, args, rate)
        pools[pool]["_recordings"] = len(recordings)
        for hop in hops:
            for name, scene in pools[pool].items():
                if not name.startswith("_"):
                    scores[name, hop] = window_scores(scene["path"], model, extractor, hop, cache)
        print(f"{pool}: {len(recordings)} recordings, scored at hops {hops}")
    count = {pool: pools[pool].pop("_recordings") for pool in POOLS}

    def run(pool: str, hop: float, setting: dict, level=None, hierarchy=None) -> dict:
        pool_scores = {name: scores[name, hop] for name in pools[pool]}
        return evaluate(pools[pool], pool_scores, model, setting, level, hierarchy)

    grid = [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]
    validation = []
    for hop in hops:
        for setting in grid:
            result = run("validation", hop, setting)
            validation.append({"hop_s": hop, **setting, **result})

    def f1(result: dict) -> float:
        return result["event_based"][SELECT_COLLAR]["f1"]

    best = max(validation, key=f1)
    chosen = {k: best[k] for k in ("hop_s", *GRID)}
    baseline = {"hop_s": window, "threshold": "0.5", "off_ratio": 1.0, "median_windows": 1, "min_gap_s": 0.0,
                "min_duration_s": 0.0}  # fmt: skip
    per_hop = {hop: max((r for r in validation if r["hop_s"] == hop), key=f1) for hop in hops}
    hierarchy = LabelHierarchy.for_model(model.config)

    def report(setting: dict, level=None) -> dict:
        values = {k: setting[k] for k in ("hop_s", *GRID)}
        rest = {k: v for k, v in values.items() if k != "hop_s"}
        return {
            "setting": values,
            "validation": run("validation", values["hop_s"], rest, level, hierarchy if level is not None else None),
            "test": run("test", values["hop_s"], rest, level, hierarchy if level is not None else None),
        }

    results = {
        "model": args.model,
        "provenance": provenance(args, argv, model_sha256),
        "window_s": window,
        "scenes": {
            pool: {
                name: {"duration_s": s["duration_s"], "reference_events": len(s["events"])}
                for name, s in pools[pool].items()
            }
            for pool in POOLS
        },  # fmt: skip
        "recordings": count,
        "metrics": f"sed_eval {importlib.metadata.version('sed_eval')}: event-based (collars 0.2 s and 1 s, offset "
        "20 % of length), segment-based (1 s)",
        "chosen_by": f"event-based F1, {SELECT_COLLAR} s collar, validation pool",
        "chosen_on_validation": report(chosen),
        "baseline": report(baseline),
        "best_per_hop": {f"{hop:g}": report(r) for hop, r in per_hop.items()},
        "levels": {f"level_{level}": report(chosen, level) for level in (0, 1)},
        "grid_validation": validation,
    }
    write_json(args.output, results)
    print(json.dumps({k: results[k] for k in ("chosen_on_validation", "baseline")}, indent=1))
    return results


if __name__ == "__main__":
    main()
