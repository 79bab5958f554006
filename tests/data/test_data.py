import io
import os

import datasets
import numpy as np
import pytest
import soundfile
import torch
from recipe_loader import load_recipe

from modeling_spa.data import (
    PADDING_ROW,
    AudioSetCollator,
    BadAudioError,
    LabelEncoder,
    RandomCrop,
    decode_audio,
    default_num_workers,
    load_audioset,
)
from modeling_spa.waveforms import mix_to_mono


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, ontology):
    module = load_recipe("build_demo_dataset")
    root = tmp_path_factory.mktemp("tiny")
    built = module.build_demo_dataset(root / "parquet", 6, 2, 2, duration_s=0.5, ontology=ontology, speech=False)
    return root, built


@pytest.mark.parametrize("layout", ["parquet", "save_to_disk", "parquet_file"])
def test_load_audioset_keeps_audio_undecoded(tiny, layout):
    root, built = tiny
    if layout == "save_to_disk":
        built.save_to_disk(str(root / "disk"))
        source = str(root / "disk")
    elif layout == "parquet_file":
        source = str(next((root / "parquet" / "data").glob("train-*.parquet")))
    else:
        source = str(root / "parquet")
    train = load_audioset(source, "train")
    assert isinstance(train.features["audio"], datasets.Audio) and not train.features["audio"].decode
    assert train[0]["video_id"] == built["train"][0]["video_id"]
    assert train[0]["audio"]["bytes"] == built["train"][0]["audio"]["bytes"]


def test_decode_resamples_and_mixes_to_mono():
    rate = 44100
    t = np.arange(rate) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    buffer = io.BytesIO()
    soundfile.write(buffer, stereo, rate, format="FLAC")
    wave = decode_audio({"bytes": buffer.getvalue(), "path": "x.flac"}, 16000, "clip-1")
    assert wave.dtype == np.float32 and wave.ndim == 1 and abs(len(wave) - 16000) <= 1
    peak_hz = np.argmax(np.abs(np.fft.rfft(wave))) * 16000 / len(wave)
    assert abs(peak_hz - 440) < 2


def wav(samples: np.ndarray, rate: int) -> dict:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return {"bytes": buffer.getvalue(), "path": "x.wav"}


@pytest.mark.parametrize(
    ("audio", "reason"),
    [
        ({"bytes": b"garbage", "path": None}, r"not audio \(or a format soundfile cannot read\)"),
        ({"bytes": None, "path": None}, "no audio"),
        (None, "no audio"),  # a Hub build whose file is missing
        # One sample at 96 kHz resamples to none at 16 kHz: it used to pass as a valid, frameless clip.
        (wav(np.full(1, 0.1, dtype=np.float32), 96000), r"too short: 0 sample\(s\) at 16000 Hz \(1 at 96000 Hz"),
        (wav(np.full(300, 0.1, dtype=np.float32), 16000), r"too short: 300 .* at least 400"),
    ],
)
def test_decode_names_the_clip(audio, reason):
    with pytest.raises(BadAudioError, match=f"clip yt-42: {reason}"):
        decode_audio(audio, 16000, "yt-42", min_samples=400)


def test_a_truncated_flac_is_a_bad_clip_whole_or_cropped():
    # Cropped, the seek into the missing half escaped as a raw LibsndfileError ("Internal psf_fseek() failed").
    buffer = io.BytesIO()
    soundfile.write(buffer, np.random.default_rng(0).uniform(-0.1, 0.1, 32000), 16000, format="FLAC")
    half = {"bytes": buffer.getvalue()[: len(buffer.getvalue()) // 2], "path": None}
    with pytest.raises(BadAudioError, match=r"^clip yt-7: unreadable audio \(.*lost sync"):
        decode_audio(half, 16000, "yt-7")
    for seed in range(3):  # crops that start in the missing half
        crop = RandomCrop(8000, np.random.default_rng(seed))
        if crop.start(32000) > 16000:
            with pytest.raises(BadAudioError, match=r"^clip yt-7: unreadable audio: cannot seek to frame \d+"):
                decode_audio(half, 16000, "yt-7", crop=RandomCrop(8000, np.random.default_rng(seed)))
            return
    pytest.fail("no seed gave a crop in the missing half")


def test_label_encoder(ontology):
    encode = LabelEncoder(ontology.label_mids[:5])
    np.testing.assert_array_equal(encode([ontology.label_mids[3], ontology.label_mids[0]]), [1, 0, 0, 1, 0])
    with pytest.raises(ValueError, match=r"clip v1: labels \['/m/nope'\]"):
        encode(["/m/nope"], "v1")


def test_collator_pads_masks_and_reports_skips(tiny):
    _, built = tiny
    short = wav(np.full(399, 0.1, dtype=np.float32), 16000)
    rows = [built["train"][0], {**built["train"][1], "audio": {"bytes": b"x", "path": None}}, built["train"][2]]
    rows += [{**built["train"][3], "audio": None}, {**built["train"][4], "audio": short}]
    mids = sorted({mid for row in built["train"] for mid in row["labels"]})
    batch = AudioSetCollator(16000, mids, max_length_s=1.0, min_samples=400)(rows)
    assert batch["input_values"].shape == (5, 16000) and batch["labels"].shape == (5, len(mids))
    # Bad clips keep their place (DDP batches stay even) as masked silence
    assert batch["valid"].tolist() == [True, False, True, False, False]
    real = batch["attention_mask"][[0, 2]]
    assert real[:, :8000].all() and not real[:, 8000:].any()  # 0.5 s clips
    assert not batch["input_values"][[1, 3, 4]].any()  # silence; the rows are masked out of losses and metrics
    named = dict(batch["skipped"])
    assert list(named) == [built["train"][i]["video_id"] for i in (1, 3, 4)]
    assert "no audio" in named[built["train"][3]["video_id"]] and "too short" in named[built["train"][4]["video_id"]]
    assert batch["clip_ids"] == [row["video_id"] for row in rows]


def test_evaluation_keeps_whole_clips_and_training_crops(tiny):
    # Evaluation hands whole clips to the model, which windows what is longer than its window; training crops.
    _, built = tiny
    long = wav(np.random.default_rng(0).standard_normal(40000).astype(np.float32) * 0.1, 16000)  # 2.5 s
    rows = [{**built["train"][0], "audio": long}, built["train"][1]]
    mids = sorted({mid for row in built["train"] for mid in row["labels"]})
    evaluation = AudioSetCollator(16000, mids, max_length_s=1.0)(rows)
    assert evaluation["input_values"].shape == (2, 40000)
    assert evaluation["attention_mask"].sum(dim=1).tolist() == [40000, 8000]
    training = AudioSetCollator(16000, mids, max_length_s=1.0, train=True)(rows)
    assert training["input_values"].shape == (2, 16000) and training["attention_mask"][0].all()


def test_a_crop_decodes_only_its_frames_and_equals_the_slice_of_the_whole_clip():
    rng = np.random.default_rng(1)
    clip = (0.2 * rng.standard_normal(48000)).astype(np.float32)  # 3 s at 16 kHz
    buffer = io.BytesIO()
    soundfile.write(buffer, clip, 16000, format="FLAC")
    audio = {"bytes": buffer.getvalue(), "path": "x.flac"}
    whole = decode_audio(audio, 16000)
    for seed in range(5):  # the model's rate: decoded from the offset (FLAC seeks), the same draws as a slice
        cropped = decode_audio(audio, 16000, crop=RandomCrop(16000, np.random.default_rng(seed)))
        start = RandomCrop(16000, np.random.default_rng(seed)).start(len(whole))
        np.testing.assert_array_equal(cropped, whole[start : start + 16000])
    # Another rate: resampled whole, then cut; a clip no longer than the crop is kept whole.
    resampled = decode_audio(audio, 8000)
    cropped = decode_audio(audio, 8000, crop=RandomCrop(8000, np.random.default_rng(3)))
    start = RandomCrop(8000, np.random.default_rng(3)).start(len(resampled))
    np.testing.assert_array_equal(cropped, resampled[start : start + 8000])
    assert len(decode_audio(audio, 16000, crop=RandomCrop(48000, np.random.default_rng(0)))) == 48000


def test_mixing_to_mono_is_the_channel_mean():
    samples = np.random.default_rng(2).standard_normal((1000, 3)).astype(np.float32)
    np.testing.assert_array_equal(mix_to_mono(samples[:, :2]), samples[:, :2].mean(axis=1))  # bit for bit
    np.testing.assert_allclose(mix_to_mono(samples), samples.mean(axis=1), rtol=1e-6, atol=1e-7)
    mono = samples[:, :1]
    assert np.shares_memory(mix_to_mono(mono), mono)  # one channel: no copy


def test_default_workers_follow_the_cores(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for cores, workers in ((32, 8), (4, 3), (2, 1), (1, 0)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _, n=cores: set(range(n)), raising=False)
        assert default_num_workers() == workers, cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes on the node share the cores
    assert default_num_workers() == 3 and default_num_workers(processes_per_node=8) == 0


def test_batches_from_workers_come_in_shared_memory_with_a_bool_mask(tiny):
    _, built = tiny
    mids = sorted({mid for row in built["train"] for mid in row["labels"]})
    rows = [built["train"][i] for i in range(4)]
    loader = torch.utils.data.DataLoader(
        rows, batch_size=4, num_workers=1, collate_fn=AudioSetCollator(16000, mids, 1.0)
    )
    batch = next(iter(loader))
    assert batch["input_values"].is_shared() and batch["attention_mask"].dtype == torch.bool
    np.testing.assert_array_equal(
        batch["input_values"].numpy(), AudioSetCollator(16000, mids, 1.0)(rows)["input_values"]
    )


def test_padding_rows_and_labels_outside_the_classes(tiny):
    _, built = tiny
    mids = sorted({mid for row in built["train"] for mid in row["labels"]})
    odd = {**built["train"][1], "labels": [*built["train"][1]["labels"], "/m/not_a_class"]}
    batch = AudioSetCollator(16000, mids, 1.0, ignore_unknown_labels=True)([built["train"][0], odd, PADDING_ROW])
    assert batch["valid"].tolist() == [True, True, False] and batch["skipped"] == []  # padding is no bad clip
    assert batch["unknown_labels"] == [(odd["video_id"], "/m/not_a_class")]
    assert batch["labels"][1].sum() == len(built["train"][1]["labels"]) and batch["attention_mask"][2].all()
