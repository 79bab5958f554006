"""Events from per-window scores (`modeling_spa.tagging.events`): time ownership, hysteresis, median filter, minimum
gap and duration, the stream's latency, the Audacity and JSON outputs."""

import json

import numpy as np
import pytest
from scipy.ndimage import median_filter

from modeling_spa.tagging.events import Event, EventRules, EventTracker, detect_events, events_json, events_tsv

W, H = 2.0, 0.5  # window and hop, seconds


def grid(scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of W at hop H for a (windows,) or (windows, classes) score sequence: starts, ends, 2-D scores."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[:, None] if scores.ndim == 1 else scores
    starts = np.arange(len(scores)) * H
    return starts, starts + W, scores


def spans(events) -> list[tuple[float, float]]:
    return [(e.onset, e.offset) for e in events]


def test_each_window_owns_the_time_nearest_its_centre():
    # Windows centred at 1.0, 1.5, 2.0, ... own [centre - H/2, centre + H/2); the first from 0, the last to its end.
    starts, ends, scores = grid([0, 0, 1, 1, 1, 0, 0])
    assert spans(detect_events(starts, ends, scores, ["x"], 0.5)) == [(1.75, 3.25)]
    starts, ends, scores = grid([1, 0, 0, 1])
    assert spans(detect_events(starts, ends, scores, ["x"], 0.5)) == [(0.0, 1.25), (2.25, 3.5)]
    # An end-aligned last window (windowing.window_starts) owns from the midpoint of its centre and the one before.
    events = detect_events([0.0, 0.5, 0.8], [2.0, 2.5, 2.8], [[0], [0], [1]], ["x"], 0.5)
    assert spans(events) == [(1.65, 2.8)]
    # A recording shorter than a window: one window, the whole recording.
    assert spans(detect_events([0.0], [0.7], [[0.9]], ["x"], 0.5)) == [(0.0, 0.7)]


def test_hysteresis_keeps_one_event_across_a_dip_that_one_threshold_splits():
    scores = [0.1, 0.8, 0.9, 0.45, 0.85, 0.7, 0.2, 0.1]
    single = detect_events(*grid(scores), ["dog"], 0.6)
    assert len(single) == 2
    both = detect_events(*grid(scores), ["dog"], 0.6, EventRules(off_ratio=0.5))  # off at 0.3
    assert spans(both) == [(single[0].onset, single[1].offset)]
    assert both[0].score == pytest.approx(0.9)
    # The off threshold alone does not start an event: 0.45 never reaches 0.6.
    assert detect_events(*grid([0.1, 0.45, 0.45, 0.1]), ["dog"], 0.6, EventRules(off_ratio=0.5)) == []


def test_min_gap_merges_and_min_duration_drops_after_merging():
    scores = [0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0]  # three one-window blips, gaps of 1.0 s and 2.5 s
    plain = detect_events(*grid(scores), ["x"], 0.5)
    assert [round(e.offset - e.onset, 3) for e in plain] == [0.5, 0.5, 0.5]
    merged = detect_events(*grid(scores), ["x"], 0.5, EventRules(min_gap_s=1.5))
    assert spans(merged) == [(plain[0].onset, plain[1].offset), spans(plain)[2]]
    kept = detect_events(*grid(scores), ["x"], 0.5, EventRules(min_gap_s=1.5, min_duration_s=1.0))
    assert spans(kept) == spans(merged)[:1]  # the merged pair is 2 s long; the lone blip is dropped
    assert detect_events(*grid(scores), ["x"], 0.5, EventRules(min_duration_s=0.6)) == []
    # A gap exactly min_gap_s long is not "less than" it: two events.
    assert len(detect_events(*grid(scores), ["x"], 0.5, EventRules(min_gap_s=1.0))) == 3


def test_the_median_filter_is_scipys_with_nearest_ends():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, (40, 3))
    for width in (3, 5):
        expected = detect_events(*grid(median_filter(scores, size=(width, 1), mode="nearest")), list("abc"), 0.55)
        assert expected  # the test means something
        assert detect_events(*grid(scores), list("abc"), 0.55, EventRules(median_windows=width)) == expected
    # A spike of one window is filtered out, a sound of three windows is kept; recordings shorter than the filter too.
    spike = detect_events(*grid([0, 0, 1, 0, 0, 1, 1, 1, 0]), ["x"], 0.5, EventRules(median_windows=3))
    assert spans(spike) == [(3.25, 4.75)]
    assert spans(detect_events(*grid([1.0, 1.0]), ["x"], 0.5, EventRules(median_windows=5))) == [(0.0, 2.5)]


def test_classes_are_independent_and_carry_their_thresholds_and_mids():
    scores = np.array([[0.9, 0.2], [0.9, 0.35], [0.1, 0.35], [0.1, 0.1]])
    events = detect_events(*grid(scores), ["Dog", "Cat"], [0.5, 0.3], mids=["/m/0bt9lr", "/m/01yrx"])
    assert [(e.label, e.mid) for e in events] == [("Dog", "/m/0bt9lr"), ("Cat", "/m/01yrx")]
    assert spans(events) == [(0.0, 1.75), (1.25, 2.25)]


def test_the_tracker_finishes_each_event_within_its_latency():
    rng = np.random.default_rng(1)
    raw = (median_filter(rng.uniform(0, 1, (200, 4)), size=(7, 1)) > 0.5) * rng.uniform(0.5, 1, (200, 4))
    for rules in (EventRules(), EventRules(median_windows=3, min_gap_s=0.7, min_duration_s=1.0, off_ratio=0.5)):
        tracker = EventTracker(list("abcd"), 0.6, rules)
        finished = []
        starts, ends, scores = grid(raw)
        for start, end, row in zip(starts, ends, scores, strict=True):
            finished += [(event, end) for event in tracker.push(start, end, row)]  # `end`: the audio received
        last = [(event, ends[-1]) for event in tracker.close()]
        assert len(finished) > 10
        # Everything finished before the end came within the stated latency of its offset (the resampler's few
        # milliseconds aside: they are in EventRules.latency_s, not in these exact window times).
        assert max(at - event.offset for event, at in finished) <= rules.latency_s(W, H) - H / 2 + 1e-9
        # Each event once, and the same as the offline detection.
        assert sorted((e for e, _ in finished + last), key=lambda e: (e.onset, e.label)) == detect_events(
            starts, ends, scores, list("abcd"), 0.6, rules
        )


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ValueError, match="median_windows must be an odd number"):
        EventRules(median_windows=2)
    with pytest.raises(ValueError, match=r"off_ratio must be in \(0, 1\]"):
        EventRules(off_ratio=1.5)
    with pytest.raises(ValueError, match="min_gap_s must be >= 0"):
        EventRules(min_gap_s=-1)
    with pytest.raises(ValueError, match=r"on thresholds must be probabilities in \[0, 1\], got \[1.5\]"):
        EventTracker(["a", "b"], [0.5, 1.5])
    with pytest.raises(ValueError, match=r"one per class \(2\), got shape \(3,\)"):
        EventTracker(["a", "b"], [0.5, 0.5, 0.5])
    tracker = EventTracker(["a"], 0.5)
    tracker.push(1.0, 3.0, [0.1])
    with pytest.raises(ValueError, match="Windows must come in time order"):
        tracker.push(0.5, 2.5, [0.1])
    with pytest.raises(ValueError, match=r"scores must have shape \(1,\)"):
        tracker.push(2.0, 4.0, [0.1, 0.2])
    tracker.close()
    with pytest.raises(ValueError, match="closed"):
        tracker.push(3.0, 5.0, [0.1])


def test_audacity_labels_and_json():
    events = [Event("Dog", 0.25, 1.5, 0.91, "/m/0bt9lr"), Event("Bird vocalization", 2.0, 3.125, 0.6)]
    assert events_tsv(events) == "0.250\t1.500\tDog\n2.000\t3.125\tBird vocalization\n"
    parsed = json.loads(events_json(events, file="a.wav"))
    assert parsed["file"] == "a.wav"
    assert parsed["events"][0] == {"label": "Dog", "onset": 0.25, "offset": 1.5, "score": 0.91, "mid": "/m/0bt9lr"}


# -- composed scenes and sed_eval ------------------------------------------------------------------------------------


def tone(seconds: float, lead: float, tail: float, rate: int = 1000) -> np.ndarray:
    """A tone of `seconds` between `lead` and `tail` seconds of silence."""
    t = np.arange(int(seconds * rate)) / rate
    return np.concatenate([np.zeros(int(lead * rate)), 0.5 * np.sin(2 * np.pi * 50 * t), np.zeros(int(tail * rate))])


def test_a_scene_places_recordings_at_known_times():
    from modeling_spa.tagging.scenes import Recording, active_span, compose_scene

    assert active_span(tone(1.0, 0.3, 0.5), 1000) == pytest.approx((0.3, 1.3))
    with pytest.raises(ValueError, match="silent"):
        active_span(np.zeros(100), 1000)
    recordings = [Recording(f"r{i}", tone(1.0 + i, 0.2, 0.3).astype(np.float32), ("Dog", "Bark")[: i + 1])
                  for i in range(3)]  # fmt: skip
    apart = compose_scene(recordings, 1000, np.random.default_rng(0), overlap_p=0.0)
    starts = [start for _, start in apart.placements]
    ends = [s + len(r.audio) / 1000 for s, r in zip(starts, recordings, strict=False)]
    assert starts[0] == 1.0 and all(0.5 <= b - a <= 2.5 for a, b in zip(ends, starts[1:], strict=False))
    assert [(e.label, e.onset) for e in apart.events if e.label == "Dog"] == [("Dog", s + 0.2) for s in starts]
    first = round(starts[1] * 1000)
    np.testing.assert_array_equal(apart.audio[first : first + len(recordings[1].audio)], recordings[1].audio)
    together = compose_scene(recordings, 1000, np.random.default_rng(0), overlap_p=1.0)
    spans = sorted((e.onset, e.offset) for e in together.events if e.label == "Dog")
    assert all(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))  # each starts before the previous ends


def test_sed_eval_scores_events_and_segments():
    from modeling_spa.tagging.scenes import sed_eval_scores

    truth = {"s": [Event("Dog", 1.0, 3.0, 1.0), Event("Cat", 5.0, 6.0, 1.0)]}
    perfect = sed_eval_scores(truth, truth, ["Dog", "Cat"], collars_s=(0.2, 1.0))
    assert perfect["event_based"]["0.2"]["f1"] == 1.0 and perfect["segment_based"]["f1"] == 1.0
    late = {"s": [Event("Dog", 1.5, 3.0, 0.9), Event("Cat", 5.0, 6.0, 0.9)]}
    shifted = sed_eval_scores(truth, late, ["Dog", "Cat"], collars_s=(0.2, 1.0))
    assert shifted["event_based"]["0.2"]["f1"] == pytest.approx(0.5)  # the Dog's onset is 0.5 s late
    assert shifted["event_based"]["1"]["f1"] == 1.0
