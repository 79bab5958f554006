"""The public AudioSet checkpoints of the paper's backbones: finding them, reading them safely, matching their keys.

- `resolve_checkpoint(source, releases)`: a local file as it is; a release's short name (e.g. `passt-s-swa-ap476`)
  to its file in the cache (`$SPA_CACHE/checkpoints`, see `modeling_spa.files.cache_dir`), downloaded once from its
  original URL and verified against the pinned sha256; offline, an error naming the file, its URL and where to put
  it.
- `load_torch_checkpoint(path)`: `torch.load(weights_only=True)` only, never arbitrary unpickling. Files that also
  hold NumPy arrays (PANNs' sampler state) are read with the few NumPy globals they need allow-listed. Whatever
  reading a file raises (a truncated file, a pickle that calls anything else, an empty file, a text or WAV file),
  the error is a `CheckpointError` naming the file and saying what it looks like.
- `load_matching(module, state_dict, family, source)`: load a converted state dict, listing missing and unexpected
  keys by name; a file of another family is named as such.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..files import cache_dir, download, sha256_of_file
from .releases import RELEASES, Release


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def checkpoint_cache() -> Path:
    return cache_dir() / "checkpoints"


def _verified(path: Path, release: Release) -> Path:
    digest = sha256_of_file(path)
    if digest != release.sha256:
        raise CheckpointError(
            f"{path} has sha256 {digest}, but the release {release.name!r} ({release.url}) has {release.sha256}: "
            "the file is damaged or not that release. Delete it and download it again."
        )
    return path


def _download(release: Release, target: Path) -> Path:
    if not release.direct_download:
        raise FileNotFoundError(
            f"The checkpoint {release.name!r} ({release.filename}) is published at {release.url} without a direct "
            f"link, so it cannot be downloaded automatically. Download {release.filename} from there and put it at "
            f"{target}, or pass the file's path."
        )
    try:
        return download(release.url, target, release.sha256, f"The checkpoint {release.name!r}",
                        "Or pass the file's path instead of the short name.")  # fmt: skip
    except ValueError as err:  # a download that is not the release
        raise CheckpointError(str(err)) from err


def resolve_checkpoint(source: str | os.PathLike, releases: Mapping[str, Release] | None = None) -> Path:
    """The local file of `source`: a path as it is, or a release's short name (cached, downloaded, verified)."""
    releases = RELEASES if releases is None else releases
    path = Path(source)
    if path.is_file():
        return path
    release = releases.get(str(source))
    if release is None:
        known = ", ".join(sorted(releases)) or "none"
        raise FileNotFoundError(f"{source!r} is neither a file nor a known release (known: {known}).")
    cached = checkpoint_cache() / release.filename
    if cached.is_file():
        return _verified(cached, release)
    return _download(release, cached)


# NumPy globals that a PANNs checkpoint's `sampler` entry (plain arrays and scalars) needs, and nothing else: none
# of them can run code. Arrays are rebuilt by `_reconstruct` from a dtype and raw bytes. Files written with NumPy 1
# name the two functions `numpy.core.multiarray.*` (NumPy 2 moved them to `numpy._core`), and a weights_only load
# matches globals by name: both names map to the same two functions.
def _numpy_globals() -> list:
    import numpy as np

    multiarray = (getattr(np, "_core", None) or np.core).multiarray
    dtypes = [type(np.dtype(kind)) for kind in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")]
    numpy1 = [
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
    ]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes, *numpy1]


def load_torch_checkpoint(path: str | os.PathLike, allow_numpy: bool = False) -> dict:
    """`torch.load(path, weights_only=True)` on the CPU; every failure to read the file is a `CheckpointError`
    naming it.

    `allow_numpy` allow-lists the NumPy globals of plain arrays (PANNs' checkpoints hold the sampler's arrays).
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_globals() if allow_numpy else []):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    # Not only the documented errors: on bytes that are no checkpoint, torch's legacy (non-zip) reader runs its
    # weights-only unpickler over them, which escapes with KeyError, IndexError, struct.error, UnicodeDecodeError...
    # Whatever reading the file raised, the file is unusable: say which, and what it looks like.
    except Exception as err:
        raise CheckpointError(f"{path}: {_unreadable_reason(path, err)}") from err
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got a {type(loaded).__name__}.")
    return loaded


# How the formats torch.load reads begin: a zip archive (torch >= 1.6), a pickle of protocol 2 or more (the legacy
# format), a tar archive ("ustar" at offset 257, torch < 0.4).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80
_TAR_MAGIC, _TAR_MAGIC_AT = b"ustar", 257


def _error_line(err: Exception) -> str:
    """`Type: first line of the message`, at most 300 characters (a KeyError's message alone is a bare `101`)."""
    message = str(err).splitlines()[0] if str(err).strip() else "no message"
    return f"{type(err).__name__}: {message}"[:300]


def _head(path: Path, size: int = 512) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return None


def _unreadable_reason(path: Path, err: Exception) -> str:
    """Why `path` could not be loaded, worded from what its first bytes are (the error alone may be a bare
    `KeyError: 101`)."""
    detail = _error_line(err)
    if isinstance(err, OSError):
        return f"cannot be read ({err.strerror or detail})."
    head = _head(path)
    if head is None:
        return f"cannot be read ({detail})."
    if not head:
        return "empty file (0 bytes), not a PyTorch checkpoint."
    torch_format = head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTOCOL
    torch_format = torch_format or head[_TAR_MAGIC_AT : _TAR_MAGIC_AT + len(_TAR_MAGIC)] == _TAR_MAGIC
    if not torch_format:
        return f"not a PyTorch checkpoint (no checkpoint starts with {head[:16]!r}; torch.load raised {detail})."
    if isinstance(err, pickle.UnpicklingError):
        # weights_only refuses every global outside its allow-list: a malicious or unsupported pickle.
        return (
            f"refused to unpickle it ({detail}). Only plain tensors and containers are loaded from checkpoint "
            "files, never code; if this is the published checkpoint, report it."
        )
    return f"not a readable PyTorch checkpoint, or truncated ({detail})."


@contextmanager
def reading_checkpoint(path: str | os.PathLike, family: str) -> Iterator[None]:
    """Around a family's loading of a checkpoint file: whatever fails turns into a `CheckpointError` naming the file.

    Past `load_torch_checkpoint`, a file can still be a valid pickle of the wrong things: a key of the right name
    holding a tensor of another rank, a key that is not a string. The converters read shapes from such tensors (a
    PaSST stride from `freq_new_pos_embed.shape[2]`) and fail deep inside with an IndexError or a ValueError about
    `zip()`. Everything in the block depends only on the file, so any failure means the file is not a usable
    checkpoint of `family`; the original error stays chained.
    """
    try:
        yield
    except CheckpointError:
        raise
    except Exception as err:
        detail = _error_line(err)
        raise CheckpointError(f"{path}: not a usable {family} checkpoint ({detail}).") from err


def tensors_of(checkpoint: Mapping, path: str | os.PathLike, keys: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: the first of `keys` present (e.g. "model", "state_dict"), else
    the checkpoint itself; an error naming the file if that holds no tensors."""
    for key in keys:
        if key in checkpoint:
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found a {type(checkpoint).__name__}.")
    state = {
        name: value for name, value in checkpoint.items() if isinstance(name, str) and isinstance(value, torch.Tensor)
    }
    if not state:
        raise CheckpointError(f"{path}: holds no tensors (top-level keys: {sorted(map(str, checkpoint))[:10]}).")
    return state


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_matching(module: nn.Module, state_dict: Mapping[str, torch.Tensor], family: str, source: str) -> None:
    """Load `state_dict` (already in the module's names) into `module`; every difference is an error that lists the
    keys. When most of the module's keys are missing, the file is named as a checkpoint of another family."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if len(missing) > len(expected) // 2:
        raise CheckpointError(
            f"{source} does not look like a {family} checkpoint: {len(missing)} of its {len(expected)} weights are "
            f"missing (e.g. {_listing(missing, 4)}), and it has {len(unexpected)} weights {family} does not use "
            f"(e.g. {_listing(unexpected, 4)})."
        )
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    problems = [
        f"missing: {_listing(missing)}" if missing else "",
        f"unexpected: {_listing(unexpected)}" if unexpected else "",
        f"shape (file vs model): {_listing(mismatched)}" if mismatched else "",
    ]
    if any(problems):
        raise CheckpointError(f"{source}: does not match the {family} model; " + "; ".join(p for p in problems if p))
    module.load_state_dict(state_dict, strict=True)


__all__ = [
    "CheckpointError",
    "load_matching",
    "load_torch_checkpoint",
    "reading_checkpoint",
    "resolve_checkpoint",
    "tensors_of",
]
