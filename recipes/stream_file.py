"""Tag a file as if it were a live stream: its samples fed to `EventStream` in chunks of random sizes, events printed
as they finish, with how much audio had arrived when each came; then checked against the offline timeline.

    python recipes/stream_file.py FILE --model DIR [--threshold auto|NUMBER] [--hop 0.5] [--median 3]
        [--hysteresis 0.5] [--min-gap 0.5] [--min-duration 0.3] [--level DEPTH] [--seed 0] [--no-check]

A microphone or socket callback does the same: `stream.feed(chunk)` with float samples, (frames,) or
(frames, channels), at the rate given when the stream was made. The file is read with the package's reader
(`data.audio_files`) in blocks of 1 to 8,192 frames, as a sound card's callback might deliver them.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from modeling_spa import SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.data.audio_files import open_audio, read_blocks
from modeling_spa.tagging import EventRules, EventStream, WindowScores, file_events


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--model", required=True)
    parser.add_argument("--threshold", default="auto", help="'auto' (the checkpoint's calibrated ones) or a number")
    parser.add_argument("--hop", type=float, help="seconds between windows (default: the model's)")
    parser.add_argument("--median", type=int, default=1)
    parser.add_argument("--hysteresis", type=float, default=1.0)
    parser.add_argument("--min-gap", type=float, default=0.0)
    parser.add_argument("--min-duration", type=float, default=0.0)
    parser.add_argument("--level", type=int)
    parser.add_argument("--seed", type=int, default=0, help="seed of the chunk sizes")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with the offline timeline")
    return parser.parse_args(argv)


def chunks(path: str, rng: np.random.Generator):
    """The file's (frames, channels) float32 samples in chunks of random sizes, and its rate."""
    with open_audio(path) as sound:
        rate = sound.samplerate
        yield rate
        for block in read_blocks(sound, path, 1 << 16):
            while len(block):
                size = int(rng.integers(1, 8193))
                yield block[:size]
                block = block[size:]


def main(argv=None) -> int:
    args = parse_args(argv)
    model = SPAForAudioClassification.from_pretrained(args.model).eval()
    extractor = SPAFeatureExtractor.from_pretrained(args.model)
    rules = EventRules(args.median, args.hysteresis, args.min_duration, args.min_gap)
    feed = chunks(args.file, np.random.default_rng(args.seed))
    rate = next(feed)
    stream = EventStream(model, extractor, rate, args.threshold, rules, args.hop, args.level)
    print(f"window {stream.window_s:g} s, hop {stream.hop_s:g} s: events come within {stream.latency_s:g} s of "
          "audio after they end")  # fmt: skip
    events, windows = [], 0
    for chunk in feed:
        for item in stream.feed(chunk):
            windows += isinstance(item, WindowScores)
            if not isinstance(item, WindowScores):
                events.append(item)
                print(f"[{stream.received_s:7.2f} s fed] {item.onset:7.2f} - {item.offset:7.2f} s  {item.score:.3f}  "
                      f"{item.label}  ({stream.received_s - item.offset:.2f} s after its end)")  # fmt: skip
    for item in stream.close():
        windows += isinstance(item, WindowScores)
        if not isinstance(item, WindowScores):
            events.append(item)
            print(f"[  end of audio ] {item.onset:7.2f} - {item.offset:7.2f} s  {item.score:.3f}  {item.label}")
    print(f"{windows} windows, {len(events)} events")
    if args.no_check:
        return 0
    offline = file_events(args.file, model, extractor, args.threshold, rules, args.hop, args.level)
    same = [(e.label, e.onset, e.offset) for e in sorted(events, key=lambda e: (e.onset, e.label, e.offset))] == [
        (e.label, e.onset, e.offset) for e in offline
    ]
    print("the same events as the offline timeline" if same else "DIFFERENT from the offline timeline")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
