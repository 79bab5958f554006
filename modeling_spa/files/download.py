"""Downloading a pinned file: the one download of the package, with the offline switch and the sha256 check."""

from __future__ import annotations

import os
import tempfile
import urllib.request
from pathlib import Path

from .local import sha256_of_file

_TIMEOUT_S = 60
_CHUNK = 1 << 20
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "SPA_OFFLINE")


def offline() -> bool:
    """Whether downloads are off: `HF_HUB_OFFLINE` or `SPA_OFFLINE` set to 1/true/yes (the tests set the first)."""
    return any(os.environ.get(name, "").lower() in {"1", "true", "yes"} for name in OFFLINE_VARIABLES)


def download(url: str, target: str | os.PathLike, sha256: str | None, what: str, how_else: str = "") -> Path:
    """Fetch `url` into `target`, verified against `sha256` (None: unverified) before it takes the target's name.

    The file is streamed into a temporary file beside the target and renamed when complete and verified, so an
    interrupted or corrupted download leaves nothing behind. Offline, or when the download fails, the error names
    `what`, the URL and the target, followed by `how_else` (another way to provide the file).
    """
    target = Path(target)
    hint = f" {how_else}" if how_else else ""
    if offline():
        raise FileNotFoundError(
            f"{what} is not at {target} and downloads are off ({'/'.join(OFFLINE_VARIABLES)}): download {url} and "
            f"put it there.{hint}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    tmp.write(chunk)
    except OSError as err:
        raise FileNotFoundError(
            f"Could not download {what} from {url} ({err}). Download it by other means and put it at {target}.{hint}"
        ) from err
    digest = sha256_of_file(tmp.name)
    if sha256 is not None and digest != sha256:
        os.unlink(tmp.name)
        raise ValueError(f"{what} downloaded from {url} has sha256 {digest}, expected {sha256}: refused.")
    os.replace(tmp.name, target)
    return target
