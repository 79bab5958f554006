"""Public checkpoints: short names, pinned hashes, the cache, safe loading, key matching."""

import os

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
