"""Public checkpoints: short names, pinned hashes, the cache, safe loading, key matching."""

import io
import os
import pickle
import re

import numpy as np
import pytest
import torch

from modeling_spa.conversion.checkpoints import (
    CheckpointError,
    Release,
    load_matching,
    load_torch_checkpoint,
    resolve_checkpoint,
    tensors_of,
)
from modeling_spa.files import sha256_of_file


class Malicious:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def release(sha256: str) -> Release:
    return Release("tiny-ap1", "demo", "https://example.org/files/tiny_mAP%3D0.1.pth?download=1", sha256, "mit")


def test_release_file_name_drops_the_query_and_decodes_the_equal_sign():
    assert release("0" * 64).filename == "tiny_mAP=0.1.pth"


def test_short_names_resolve_through_the_verified_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPA_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    payload = tmp_path / "payload.pth"
    torch.save({"w": torch.ones(2)}, payload)
    good = release(sha256_of_file(payload))
    with pytest.raises(FileNotFoundError, match=r"checkpoints/tiny_mAP=0.1.pth and downloads are off.*example.org"):
        resolve_checkpoint("tiny-ap1", {"tiny-ap1": good})
    cached = tmp_path / "checkpoints" / "tiny_mAP=0.1.pth"
    cached.parent.mkdir()
    cached.write_bytes(payload.read_bytes())
    assert resolve_checkpoint("tiny-ap1", {"tiny-ap1": good}) == cached
    with pytest.raises(CheckpointError, match="damaged or not that release"):
        resolve_checkpoint("tiny-ap1", {"tiny-ap1": release("f" * 64)})
    assert resolve_checkpoint(payload, {}) == payload  # a path is taken as it is
    with pytest.raises(FileNotFoundError, match=r"neither a file nor a known release \(known: tiny-ap1\)"):
        resolve_checkpoint("tiny-ap2", {"tiny-ap1": good})


def test_only_tensors_and_plain_numpy_arrays_are_unpickled(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "payload": Malicious()}, evil)
    for allow_numpy in (False, True):
        with pytest.raises(CheckpointError, match=f"{evil}: refused to unpickle"):
            load_torch_checkpoint(evil, allow_numpy=allow_numpy)
    panns = tmp_path / "panns.pth"
    torch.save({"model": {"w": torch.ones(2)}, "sampler": {"indexes": np.arange(4), "x": np.float32(1)}}, panns)
    with pytest.raises(CheckpointError, match="refused"):
        load_torch_checkpoint(panns)
    loaded = load_torch_checkpoint(panns, allow_numpy=True)
    assert np.array_equal(loaded["sampler"]["indexes"], np.arange(4))
    assert list(tensors_of(loaded, panns, ("model",))) == ["w"]
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(panns.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=f"{truncated}: not a readable PyTorch checkpoint, or truncated"):
        load_torch_checkpoint(truncated)


def test_key_differences_are_listed_and_another_family_is_named():
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    state = dict(module.state_dict())
    state["2.weight"] = torch.ones(1)
    del state["1.bias"]
    with pytest.raises(CheckpointError, match=r"missing: 1\.bias; unexpected: 2\.weight"):
        load_matching(module, state, "tiny", "x.pt")
    state = dict(module.state_dict()) | {"0.weight": torch.ones(3, 2)}
    with pytest.raises(CheckpointError, match=r"shape \(file vs model\): 0\.weight \(3, 2\) vs \(2, 2\)"):
        load_matching(module, state, "tiny", "x.pt")
    with pytest.raises(CheckpointError, match="does not look like a tiny checkpoint"):
        load_matching(module, {"conv.weight": torch.ones(1)}, "tiny", "other.pt")


# -- every file that is not a checkpoint is refused, by every family's loader, naming the file ---------------------

FAMILY_KEYS = {  # names each family's converter reads shapes from: given tensors of the wrong rank, they must not crash
    "passt": ["cls_token", "dist_token", "new_pos_embed", "freq_new_pos_embed", "time_new_pos_embed",
              "patch_embed.proj.weight", "head.1.weight", "blocks.0.norm1.weight"],
    "cnn14": ["bn0.weight", "fc1.weight", "conv_block1.conv1.weight", "fc_audioset.weight"],
    "htsat": ["sed_model.layers.0.blocks.0.mlp.fc1.weight", "sed_model.layers.0.blocks.0.attn.qkv.weight",
              "sed_model.patch_embed.proj.weight", "sed_model.tscam_conv.weight", "sed_model.bn0.weight"],
    "psla": ["module.effnet._conv_head.weight", "module.attention.att.0.weight", "module.effnet._blocks.0._bn0.weight"],
}  # fmt: skip


def _saved(obj, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def _other_file_types(tmp_path) -> dict[str, bytes]:
    """Files of other kinds, as a user might pass them by mistake (all renamed .pth by the caller)."""
    import json
    import tarfile
    import zipfile

    import soundfile

    kinds = {"empty": b"", "text": b"hello, not a checkpoint\n", "json": json.dumps({"model": [1, 2]}).encode()}
    for audio_format in ("WAV", "FLAC", "OGG"):
        buffer = io.BytesIO()
        soundfile.write(buffer, np.zeros(800, dtype=np.float32), 8000, format=audio_format)
        kinds[audio_format.lower()] = buffer.getvalue()
    kinds["pickle"] = pickle.dumps({"model": {"w": [1.0, 2.0]}})  # a plain pickle: no torch magic number
    kinds["npy"] = (lambda b: (np.save(b, np.arange(3)), b.getvalue())[1])(io.BytesIO())
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("data.pkl", b"not a pickle")
    kinds["zip"] = zipped.getvalue()
    member = tmp_path / "member.txt"
    member.write_text("a tar member")
    tarred = io.BytesIO()
    with tarfile.open(fileobj=tarred, mode="w") as archive:
        archive.add(member, arcname="member.txt")
    kinds["tar"] = tarred.getvalue()
    kinds["png"] = b"\x89PNG\r\n\x1a\n" + bytes(40)
    kinds["gzip"] = __import__("gzip").compress(b"hello")
    return kinds


def _wrong_contents(family: str) -> dict[str, bytes]:
    """Readable torch files holding the wrong things: the family's keys with tensors of another rank, odd containers.
    (Another family's keys are no shortcut: the file is then named as that family's, see test_backbone_*.)"""
    cases = {}
    for shape in [(), (1,), (2, 3), (1, 1, 1, 1), (0,)]:
        cases[f"{family}{shape}"] = _saved({key: torch.zeros(shape) for key in FAMILY_KEYS[family]})
    odd = {"list": [1, 2], "tensor": torch.ones(2), "empty_dict": {}, "strings": {"a": "b"},
           "int_keys": {1: torch.ones(1)}, "model_is_int": {"model": 5, "state_dict": 3},
           "model_is_list": {"model": [torch.ones(1)]}}  # fmt: skip
    cases |= {name: _saved(obj) for name, obj in odd.items()}
    return cases


def _truncations() -> dict[str, bytes]:
    """Real (tiny) checkpoints in both of torch's formats, with and without NumPy arrays, cut at many offsets."""
    cases = {}
    for legacy in (False, True):
        for with_numpy in (False, True):
            obj = {"model": {"a": torch.randn(3, 4), "b.c": torch.arange(5)}, "iteration": 3}
            if with_numpy:
                obj["sampler"] = {"indexes": np.arange(4)}
            data = _saved(obj, legacy)
            cuts = sorted(set(range(0, 24)) | set(range(0, len(data), max(1, len(data) // 25))) | {len(data) - 1})
            cases |= {f"trunc_legacy{legacy}_numpy{with_numpy}_{cut}": data[:cut] for cut in cuts}
    return cases


def _random_bytes(count: int = 60) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    cases = {f"random{i}": rng.bytes(int(rng.integers(1, 300))) for i in range(count)}
    # After a pickle protocol byte torch's unpickler runs over the rest: the cases that escaped as IndexError.
    cases |= {f"pickle_head{i}": b"\x80\x02" + rng.bytes(int(rng.integers(1, 300))) for i in range(count // 2)}
    return cases


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the plain pickle: torch warns, then refuses it
def test_every_file_that_is_no_checkpoint_is_a_checkpoint_error_naming_it_for_every_family(tmp_path):
    from modeling_spa.conversion import load_backbone

    shared = _other_file_types(tmp_path) | _truncations() | _random_bytes()
    runs = [(family, name, data) for family in FAMILY_KEYS for name, data in (shared | _wrong_contents(family)).items()]
    assert len(shared) > 250
    escaped = []
    for family, name, data in runs:
        path = tmp_path / f"{name}.pth"
        path.write_bytes(data)
        try:
            load_backbone(family, path)
        except CheckpointError as err:
            if str(path) not in str(err):
                escaped.append(f"{family} {name}: message without the file: {err}")
        except Exception as err:  # noqa: BLE001 - what escapes is the finding
            escaped.append(f"{family} {name}: {type(err).__name__}: {err}")
        else:
            escaped.append(f"{family} {name}: loaded")
    assert not escaped, f"{len(escaped)} of {len(runs)} escaped, e.g. {escaped[:5]}"


def test_a_file_that_is_no_checkpoint_says_what_it_is(tmp_path):
    kinds = _other_file_types(tmp_path)
    expected = {
        "empty": r"empty file \(0 bytes\)",
        "text": r"not a PyTorch checkpoint \(no checkpoint starts with b'hello, not a che'; torch.load raised KeyError",
        "wav": r"not a PyTorch checkpoint \(no checkpoint starts with b'RIFF",
        "zip": r"not a readable PyTorch checkpoint, or truncated",
    }
    for kind, message in expected.items():
        path = tmp_path / f"{kind}.pth"
        path.write_bytes(kinds[kind])
        with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: {message}"):
            load_torch_checkpoint(path)


@pytest.mark.parametrize("family", ["passt", "htsat"])
def test_spa_convert_refuses_a_text_file_naming_it(family, tmp_path, capsys):
    from modeling_spa.cli.convert import main

    path = tmp_path / ("x.ckpt" if family == "htsat" else "x.pth")
    path.write_text("hello, not a checkpoint\n")
    assert main([str(path), "--backbone", family, "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: not a PyTorch checkpoint") and "Traceback" not in err
