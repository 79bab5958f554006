"""recipes/build_real_sounds.py and its library parts: rcc bundles, .deb packages, pools, mixtures, caching."""

import csv
import hashlib
import io
import json
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from training_runs import load_recipe

from modeling_spa.builds.debian import PackageError, Pin, extract_members, fetch_packages, read_pins
from modeling_spa.builds.mixtures import POOLS, MixturePlanner, assign_pools, target_classes
from modeling_spa.builds.qt_rcc import RccError, read_rcc, write_rcc
from modeling_spa.builds.shards import DATA_DIR, read_audio
from modeling_spa.data import load_audioset

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "recipes" / "real_sounds" / "manifest.tsv"
PACKAGES = REPO / "recipes" / "real_sounds" / "packages.tsv"


def test_rcc_reader_on_a_hand_made_bundle():
    """Version 2 layout written field by field: root -> dir "snd" -> "a.ogg" (zlib), "b.wav" (plain)."""
    names = b""
    offsets = {}
    for label in ("", "snd", "a.ogg", "b.wav"):
        offsets[label] = len(names)
        names += struct.pack(">HI", len(label), 0) + label.encode("utf-16-be")
    plain, packed = b"RIFF plain bytes", b"OggS" + bytes(range(200))
    data = struct.pack(">I", len(plain)) + plain
    compressed = len(packed).to_bytes(4, "big") + zlib.compress(packed)
    data += struct.pack(">I", len(compressed)) + compressed
    tree = struct.pack(">IHII", offsets[""], 2, 1, 1) + bytes(8)  # root: 1 child, node 1
    tree += struct.pack(">IHII", offsets["snd"], 2, 2, 2) + bytes(8)  # snd: 2 children, nodes 2-3
    tree += struct.pack(">IHHHI", offsets["a.ogg"], 1, 0, 0, len(plain) + 4) + bytes(8)
    tree += struct.pack(">IHHHI", offsets["b.wav"], 0, 0, 0, 0) + bytes(8)
    header_size = 20
    bundle = b"qres" + struct.pack(
        ">IIII", 2, header_size + len(data) + len(names), header_size, header_size + len(data)
    )
    bundle += data + names + tree
    assert read_rcc(bundle, "hand.rcc") == {"snd/a.ogg": packed, "snd/b.wav": plain}

    files = {"gcompris/src/x/banjo.ogg": packed, "gcompris/src/x/knock.wav": plain, "top.txt": b"t"}
    for version in (1, 2, 3):
        assert read_rcc(write_rcc(files, {"gcompris/src/x/banjo.ogg"}, version)) == files
    with pytest.raises(RccError, match="bad.rcc: not a Qt resource bundle"):
        read_rcc(b"PK\x03\x04" + bytes(40), "bad.rcc")
    with pytest.raises(RccError, match="cut.rcc: truncated"):
        read_rcc(bundle[:-30], "cut.rcc")


def test_riff_wrapped_ogg_vorbis_is_decoded(tmp_path):
    """LMMS ships RIFF/WAVE files with format tag 0x674f around an Ogg Vorbis stream; libsndfile reads only the
    stream."""
    ogg = io.BytesIO()
    soundfile.write(ogg, 0.3 * np.sin(np.arange(4410) / 10.0), 44100, format="OGG")
    body = ogg.getvalue()
    fmt = struct.pack("<HHIIHH", 0x674F, 1, 44100, 8000, 1, 16)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(body)) + body
    path = tmp_path / "hit.ogg"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    with pytest.raises(soundfile.LibsndfileError):
        soundfile.read(path)
    samples, rate = read_audio(path)
    assert rate == 44100 and samples.shape == (4410, 1) and abs(samples).max() > 0.2


def test_the_project_manifest_is_valid_and_pinned(ontology):
    recipe = load_recipe("build_real_sounds")
    clips = recipe.read_manifest(MANIFEST, ontology)
    names = dict(zip(ontology.label_mids, ontology.label_names, strict=True))
    assert len(clips) == 1021
    pins = read_pins(PACKAGES)
    assert {c.package for c in clips} == set(pins) and len(pins) == 7
    for clip in clips:
        assert [names[m] for m in clip.labels] == clip.row["label_names"].split(";"), clip.id
        assert len(clip.sha256) == 64 and clip.confidence in ("H", "M"), clip.id
    assert not any(c.id.endswith("bovines/ram") for c in clips)  # the duplicate of mountaingoat (REVIEW.md)
    assert sum(c.package == "asterisk-core-sounds-en-wav" for c in clips) == 568


def test_pools_are_disjoint_and_every_target_class_is_in_each(ontology):
    recipe = load_recipe("build_real_sounds")
    clips, left_out = recipe.select(recipe.read_manifest(MANIFEST, ontology), max_speech=40, seed=0)
    assert len(left_out) == 528
    recs = recipe.recordings(clips)
    pools = assign_pools(recs, seed=0, min_recordings=5)
    group_pools = {}
    for rec in recs:
        group_pools.setdefault(rec.group, set()).add(pools[rec.id])
    assert all(len(p) == 1 for p in group_pools.values())  # equal audio never in two pools
    classes = target_classes(recs, pools, min_recordings=5)
    assert len(classes) >= 20
    for mid in classes:
        assert {pools[r.id] for r in recs if mid in r.labels} == set(POOLS), mid
    counts = {pool: sum(p == pool for p in pools.values()) for pool in POOLS}
    assert abs(counts["train"] / len(recs) - 0.6) < 0.05 and abs(counts["test"] / len(recs) - 0.2) < 0.05

    waves = {rec.id: np.ones(8000, dtype=np.float32) for rec in recs}
    names = dict(zip(ontology.label_mids, ontology.label_names, strict=True))
    for pool in POOLS:
        members = [rec for rec in recs if pools[rec.id] == pool]
        members = [type(r)(r.id, r.group, tuple(m for m in r.labels if m in classes)) for r in members]
        planner = MixturePlanner(waves, [r for r in members if r.labels], classes, names,
                                 {r.id: "x" for r in recs}, 16000, 2.0, seed=0)  # fmt: skip
        for task in planner.plan(pool, 60):
            assert {pools[p.recording] for p in task.placements} == {pool}  # no recording from another pool
            assert set(task.labels) <= set(classes) and 1 <= len(task.placements) <= 3


def ar_archive(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, content in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode()
        out += header + content + (b"\n" if len(content) % 2 else b"")
    return out


def tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def tone(frequency: float, seconds: float, rate: int, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(buffer, (0.4 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), rate, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def fake_release(tmp_path_factory, mid_of):
    """A .deb with 14 recordings (12 files and 2 inside an .rcc bundle) of 4 classes, its pin and a manifest."""
    root = tmp_path_factory.mktemp("fake")
    classes = ["Dog", "Cat", "Bell", "Piano"]
    files, rows, bundled = {}, [], {}
    for i in range(14):
        name = classes[i % 4]
        audio = tone(200 + 50 * i, 0.3 + 0.4 * (i % 3), [44100, 22050, 48000][i % 3])
        if i < 2:
            inner = f"gcompris/src/res/{name.lower()}{i}.wav"
            bundled[inner] = audio
            path = f"usr/share/game/rcc/sounds.rcc#{inner}"
        else:
            path = f"usr/share/game/sounds/{name.lower()}{i}.wav"
            files[path] = audio
        rows.append({"id": f"game:{name.lower()}{i}", "package": "game-sounds", "path": path,
                     "labels": mid_of[name], "label_names": name, "licence": "CC0-1.0", "confidence": "H",
                     "duration_s": "", "sample_rate": "", "sha256": "", "note": ""})  # fmt: skip
    files["usr/share/game/rcc/sounds.rcc"] = write_rcc(bundled, {next(iter(bundled))})
    deb = ar_archive({"debian-binary": b"2.0\n", "control.tar.xz": tar_xz({}), "data.tar.xz": tar_xz(files)})
    pin = Pin("game-sounds", "1.0-1", "all", hashlib.sha256(deb).hexdigest())
    (root / "debs").mkdir()
    (root / "debs" / pin.filename).write_bytes(deb)
    with open(root / "packages.tsv", "w", newline="") as handle:
        handle.write(f"package\tversion\tarchitecture\tsha256\n{pin.package}\t{pin.version}\tall\t{pin.sha256}\n")
    with open(root / "manifest.tsv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return root, pin


def build_args(recipe, output: Path, cache: Path):
    return recipe.parse_args(["--output", str(output), "--cache", str(cache), "--num-train", "12", "--num-validation",
                              "6", "--num-test", "6", "--min-recordings", "3", "--no-progress"])  # fmt: skip


def test_build_from_packages_is_cached_and_deterministic(fake_release, tmp_path, ontology):
    root, pin = fake_release
    recipe = load_recipe("build_real_sounds")
    cache = tmp_path / "cache"
    shutil.copytree(root / "debs", cache / "debs")
    kwargs = {"ontology": ontology, "manifest": root / "manifest.tsv", "packages": root / "packages.tsv"}
    first = recipe.build_real_sounds(build_args(recipe, tmp_path / "a", cache), **kwargs)
    assert not first["up_to_date"] and first["packages"]["game-sounds"]["written"] == 14
    assert first["target_classes"] == ["Dog", "Cat", "Piano", "Bell"]  # in AudioSet's label order

    sources = {split: load_audioset(str(tmp_path / "a" / "sources"), split) for split in POOLS}
    ids = [set(sources[split]["video_id"]) for split in POOLS]
    assert sum(map(len, ids)) == 14 and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    row = sources["train"][0]
    wave, rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]))
    assert rate == 16000 and len(wave) >= 8000  # resampled once; short clips padded to 0.5 s
    assert row["licence"] == "CC0-1.0" and row["source"].startswith("game-sounds:usr/share/game/")

    for split in POOLS:
        mixtures = load_audioset(str(tmp_path / "a" / "mixtures"), split)
        assert len(mixtures) == {"train": 12, "validation": 6, "test": 6}[split]
        for mix in mixtures:
            assert set(mix["source"].split(";")) <= set(sources[split]["video_id"])  # its own pool only
            assert mix["labels"] and len(soundfile.read(io.BytesIO(mix["audio"]["bytes"]))[0]) == 32000
    classes = json.loads((tmp_path / "a" / "mixtures" / "classes.json").read_text())
    assert len(classes["mids"]) == 4
    card = (tmp_path / "a" / "mixtures" / "README.md").read_text()
    assert "| game:dog0 |" in card and "CC0-1.0" in card

    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()}
    again = recipe.build_real_sounds(build_args(recipe, tmp_path / "a", cache), **kwargs)
    assert again["up_to_date"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()} == before  # nothing done

    recipe.build_real_sounds(build_args(recipe, tmp_path / "b", cache), **kwargs)
    for build in ("sources", "mixtures"):
        shards = sorted((tmp_path / "a" / build / DATA_DIR).iterdir())
        assert shards and [p.name for p in shards] == sorted(
            p.name for p in (tmp_path / "b" / build / DATA_DIR).iterdir()
        )
        for shard in shards:
            assert shard.read_bytes() == (tmp_path / "b" / build / DATA_DIR / shard.name).read_bytes(), shard


def test_without_apt_and_without_debs_the_error_names_the_files_and_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    pins = list(read_pins(PACKAGES).values())[:2]
    with pytest.raises(PackageError) as error:
        fetch_packages(pins, tmp_path / "debs")
    message = str(error.value)
    assert "apt-get is not on PATH" in message and str(tmp_path / "debs") in message
    assert "scratch_1.4.0.6~dfsg1-6.1_all.deb" in message and "gcompris-qt-data_3.1-2_all.deb" in message


def test_a_deb_with_another_hash_is_refused(fake_release, tmp_path):
    root, pin = fake_release
    shutil.copytree(root / "debs", tmp_path / "debs")
    wrong = Pin(pin.package, pin.version, pin.architecture, "0" * 64)
    with pytest.raises(PackageError, match=f"{pin.filename}: sha256 .* is not the pinned 0000"):
        fetch_packages([wrong], tmp_path / "debs")


def test_real_package_sound_theme_freedesktop(tmp_path, ontology):
    """The one small real package (384 KB), fetched with apt-get as the builder does: pinned hash, members, and the
    manifest's sha256 of each decoded clip."""
    if not shutil.which("apt-get"):
        pytest.skip("no apt-get on this machine: the builder's error for this case is tested above")
    pin = read_pins(PACKAGES)["sound-theme-freedesktop"]
    deb = fetch_packages([pin], tmp_path / "debs")[pin.package]
    recipe = load_recipe("build_real_sounds")
    clips = [c for c in recipe.read_manifest(MANIFEST, ontology) if c.package == pin.package]
    extracted = extract_members(deb, [c.path for c in clips], tmp_path / "x")
    assert len(clips) == 12
    for clip in clips:
        assert recipe.audio_sha256(extracted[clip.path])[0] == clip.sha256, clip.id
