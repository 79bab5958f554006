"""Reading audio files (`modeling_spa.export.onnx_tagger`: open_audio, read_blocks, file_windows), the one reader of
spa-tag, the data loader, the builders and the exported tagger: streamed reads equal a whole-file decode exactly,
bad files get messages that say what happened, and the MP3 decoder's own output stays off the terminal."""

import io
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from modeling_spa.builds import read_audio
from modeling_spa.data import BadAudioError, audio_files, decode_audio, load_audioset
from modeling_spa.tagging import files as tagging
from modeling_spa.taxonomy.audioset import cache_dir
from modeling_spa.waveforms import RESAMPLE_QUALITY
from modeling_spa.windowing import window_starts

RATE = 48000  # every format below writes it (Opus takes no 44.1 kHz)
MODEL_RATE = 16000
# (format, subtype) soundfile writes each kind of file with.
FORMATS = {"mp3": ("MP3", None), "ogg": ("OGG", "VORBIS"), "opus": ("OGG", "OPUS"), "flac": ("FLAC", None),
           "wav": ("WAV", "PCM_16")}  # fmt: skip
REAL_SOURCES = Path(os.environ.get("SPA_REAL_SOUNDS", Path(__file__).parents[2] / "outputs/real_sounds/sources"))
# The recordings the real-recording build decodes, unpacked from their Debian packages (recipes/build_real_sounds.py).
REAL_PACKAGES = cache_dir() / "real_sounds" / "extracted"


def whole_file(path) -> tuple[np.ndarray, int]:
    """The reference: the whole file in one read, as soundfile reads it."""
    return soundfile.read(path, dtype="float32", always_2d=True)


def windows_of_whole_file(path, window: int) -> list[np.ndarray]:
    """The windows spa-tag must give: the whole-file decode mixed to mono, resampled at once, sliced."""
    samples, rate = whole_file(path)
    wave = np.ascontiguousarray(samples.mean(axis=1))
    if rate != MODEL_RATE:  # as every reader: a file at the model's rate is not resampled
        wave = soxr.resample(wave, rate, MODEL_RATE, quality=RESAMPLE_QUALITY)
    return [wave[start : start + window] for start in window_starts(len(wave), window, window)]


def synthetic_sound(seconds: float) -> np.ndarray:
    """Stereo tones and noise at `RATE`, 0.2 s of sound in every 0.5 s, digital silence between: more than one
    block of `BLOCK_FRAMES` (262,144 frames, 5.5 s). Silence as real recordings have it matters: where a seek lands
    after it, libsndfile's MP3 decoder came back wrong (up to 0.43 here; a continuous tone sought exactly)."""
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(0)
    gate = (t % 0.5) < 0.2
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))
    right = 0.2 * np.sin(2 * np.pi * 1234 * t + 3 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(len(t))
    return (gate[:, None] * np.stack([left, right], axis=1)).astype(np.float32)


def real_sound(seconds: float) -> tuple[np.ndarray, int] | None:
    """Real recordings (the test split of the real-recording build, 16 kHz), joined to `seconds`."""
    if not (REAL_SOURCES / "data").is_dir():
        return None
    pieces, total = [], 0
    for row in load_audioset(str(REAL_SOURCES), "test"):
        pieces.append(decode_audio(row["audio"], MODEL_RATE))
        total += len(pieces[-1])
        if total >= seconds * MODEL_RATE:
            break
    return np.concatenate(pieces)[: int(seconds * MODEL_RATE), None], MODEL_RATE


def write(folder: Path, audio: np.ndarray, rate: int, kind: str, name: str = "sound") -> Path:
    path = folder / f"{name}.{kind}"
    file_format, subtype = FORMATS[kind]
    with soundfile.SoundFile(path, "w", rate, audio.shape[1], format=file_format, subtype=subtype) as sound:
        for start in range(0, len(audio), rate):  # in 1 s pieces: one long Ogg Vorbis write crashes libsndfile 1.2.2
            sound.write(audio[start : start + rate])
    return path


@pytest.fixture(scope="module")
def synthetic_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("synthetic")
    audio = synthetic_sound(8.0)
    return {kind: write(folder, audio, RATE, kind) for kind in FORMATS}


# -- the samples of a whole-file decode, exactly, however the file is read -----------------------------------------


@pytest.mark.parametrize("kind", FORMATS)
def test_blocks_read_forward_join_to_the_whole_file_decode(synthetic_files, kind):
    path = synthetic_files[kind]
    expected = whole_file(path)[0]
    for frames in (1000, 4093, audio_files.BLOCK_FRAMES):
        with audio_files.open_audio(path) as sound:
            blocks = list(audio_files.read_blocks(sound, str(path), frames))
        assert len(blocks) == -(-len(expected) // frames)
        np.testing.assert_array_equal(np.concatenate(blocks), expected)
    with audio_files.open_audio(path) as sound:
        np.testing.assert_array_equal(audio_files.read_all(sound, str(path)), expected)


@pytest.mark.parametrize("kind", FORMATS)
def test_spa_tag_windows_are_those_of_the_whole_file_decode(synthetic_files, kind):
    # Before, every MP3 block boundary (each 262,144 frames) left ~1,100 samples that differed by up to 0.2.
    path = synthetic_files[kind]
    expected = windows_of_whole_file(path, MODEL_RATE)
    streamed = list(tagging.file_windows(str(path), MODEL_RATE, MODEL_RATE, MODEL_RATE))
    assert len(streamed) == len(expected) == 8
    for got, want in zip(streamed, expected, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["mp3", "ogg", "flac"])
def test_real_recordings_as_mp3_ogg_and_flac_stream_exactly(tmp_path, kind):
    real = real_sound(20.0)  # 320,000 frames at 16 kHz: a block boundary at 262,144
    if real is None:
        pytest.skip(f"no real recordings at {REAL_SOURCES}: build them (recipes/build_real_sounds.py)")
    path = write(tmp_path, *real, kind)
    expected = windows_of_whole_file(path, MODEL_RATE)
    streamed = list(tagging.file_windows(str(path), MODEL_RATE, MODEL_RATE, MODEL_RATE))
    assert len(streamed) == len(expected) == 20
    for got, want in zip(streamed, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert whole_file(path)[0].shape[0] > audio_files.BLOCK_FRAMES


def test_the_real_mp3s_of_the_packages_read_in_blocks_exactly():
    mp3s = sorted(REAL_PACKAGES.rglob("*.mp3"))
    if not mp3s:
        pytest.skip(f"no real MP3s under {REAL_PACKAGES}: build the real recordings (make real-sounds)")
    assert len(mp3s) >= 30
    # The two longer than one block of 262,144 frames, through spa-tag's windows (before: up to 0.11 off).
    long = [path for path in mp3s if soundfile.info(path).frames > 1 << 18]
    assert {path.name for path in long} >= {"Medieval2.mp3", "Techno2.mp3"}
    for path in long:
        expected = windows_of_whole_file(path, MODEL_RATE)
        streamed = list(tagging.file_windows(str(path), MODEL_RATE, MODEL_RATE, MODEL_RATE))
        assert len(streamed) == len(expected)
        for got, want in zip(streamed, expected, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=path.name)
    for path in mp3s:  # every one, in small blocks: many boundaries
        expected = whole_file(path)[0]
        for frames in (1000, 4093):
            with audio_files.open_audio(path) as sound:
                got = np.concatenate(list(audio_files.read_blocks(sound, str(path), frames)))
            np.testing.assert_array_equal(got, expected, err_msg=f"{path.name}, blocks of {frames}")


# -- messages that say what happened, and no decoder noise on the terminal ------------------------------------------

READERS = {
    "spa-tag": lambda path: list(tagging.file_windows(str(path), MODEL_RATE, MODEL_RATE, MODEL_RATE)),
    "tag_onnx": lambda path: list(audio_files.file_windows(path, MODEL_RATE, MODEL_RATE, MODEL_RATE)),
    "data (path)": lambda path: decode_audio({"path": str(path)}, MODEL_RATE, str(path)),
    "data (bytes)": lambda path: decode_audio({"bytes": path.read_bytes()}, MODEL_RATE, str(path)),
    "builder": lambda path: read_audio(path),
}
NOT_AUDIO = "not audio (or a format soundfile cannot read)"


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Bad inputs and the reason each reader must give."""
    (folder / "text.mp3").write_text("hello, not audio\n" * 3)
    (folder / "text.wav").write_text("hello, not audio\n")
    (folder / "empty.flac").write_bytes(b"")
    (folder / "folder.ogg").mkdir()
    return {
        "text renamed .mp3": (folder / "text.mp3", NOT_AUDIO),
        "text renamed .wav": (folder / "text.wav", NOT_AUDIO),
        "empty": (folder / "empty.flac", "empty file (0 bytes), not audio"),
        "missing": (folder / "missing.wav", "not a file (no such file)"),
        "directory": (folder / "folder.ogg", "not a file (a directory)"),
    }


@pytest.mark.parametrize("reader", READERS)
def test_bad_files_are_named_with_what_is_wrong_and_the_decoder_stays_quiet(reader, tmp_path, capfd):
    for case, (path, reason) in bad_files(tmp_path).items():
        if reader in ("data (bytes)", "builder") and case in ("missing", "directory", "empty"):
            continue  # these read the bytes first: the OS's error, or no bytes at all (tested in test_data)
        with pytest.raises(ValueError) as raised:
            READERS[reader](path)
        err = raised.value
        assert isinstance(err, BadAudioError if reader in ("spa-tag", "data (path)", "data (bytes)")
                          else audio_files.AudioFileError), case  # fmt: skip
        assert str(path) in str(err) and err.reason.startswith(reason), (case, str(err))
        if case == "text renamed .mp3" and reader not in ("data (bytes)", "builder"):  # libsndfile tries its MP3
            # decoder on a path named .mp3, not on bytes
            assert "the decoder said: Note: Illegal Audio-MPEG-Header" in err.reason
    # libmpg123 wrote three lines to fd 2 for the text file named .mp3: none may reach the terminal.
    assert capfd.readouterr().err == ""


def test_decoder_output_is_kept_for_the_message_and_fd2_comes_back(tmp_path, capfd):
    path = tmp_path / "text.mp3"
    path.write_text("hello, not audio\n")
    before = os.fstat(2)
    errors = []

    def decode_many():
        for _ in range(10):
            try:
                audio_files.open_audio(path)
            except audio_files.AudioFileError as err:
                errors.append(err.reason)

    threads = [threading.Thread(target=decode_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Every open failed with the decoder's words in its message, and fd 2 is the terminal (here capfd's) again.
    assert len(errors) == 40 and all("Illegal Audio-MPEG-Header" in reason for reason in errors)
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    os.write(2, b"a real error, written by C\n")
    print("a real error, written by Python", file=sys.stderr)
    assert capfd.readouterr().err == "a real error, written by C\na real error, written by Python\n"
    with pytest.raises(ZeroDivisionError), audio_files.decoder_output() as said:  # fd 2 comes back on errors too
        os.write(2, b"inside\n")
        raise ZeroDivisionError
    assert said == ["inside"]
    os.write(2, b"outside\n")
    assert capfd.readouterr().err == "outside\n"


def test_a_truncated_file_is_read_as_far_as_it_goes_or_named(tmp_path):
    # Cut in the middle, an MP3 or Ogg file decodes up to the cut; FLAC's decoder loses sync, an error naming the file.
    for kind in ("mp3", "ogg", "flac"):
        path = write(tmp_path, synthetic_sound(2.0), RATE, kind)
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        with audio_files.open_audio(path) as sound:
            if kind == "flac":
                with pytest.raises(audio_files.AudioFileError, match=f"^{path}: unreadable audio \\(.*lost sync"):
                    audio_files.read_all(sound, str(path))
                continue
            got = audio_files.read_all(sound, str(path))
        assert 0.5 * RATE < len(got) < 1.5 * RATE
        np.testing.assert_array_equal(got, whole_file(path)[0][: len(got)])


def test_bytes_in_memory_are_read_as_files_are(synthetic_files):
    path = synthetic_files["mp3"]
    with audio_files.open_audio(io.BytesIO(path.read_bytes()), "clip-1") as sound:
        got = np.concatenate(list(audio_files.read_blocks(sound, "clip-1", 4093)))
    np.testing.assert_array_equal(got, whole_file(path)[0])


def test_the_tagger_without_soxr_names_a_file_at_another_rate(synthetic_files, monkeypatch):
    path = synthetic_files["flac"]
    monkeypatch.setitem(sys.modules, "soxr", None)  # not installed beside tag_onnx.py: importing it fails
    with pytest.raises(audio_files.AudioFileError, match=f"^{path}: at 48000 Hz where the model takes 16000 Hz: "):
        list(audio_files.file_windows(path, MODEL_RATE, MODEL_RATE, MODEL_RATE))
    assert len(list(audio_files.file_windows(path, RATE, RATE, RATE))) == 8  # at the model's rate: not needed
