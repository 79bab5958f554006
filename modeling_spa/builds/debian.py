"""Debian packages as a data source: pinned .deb files fetched with the ordinary client, verified, read without
installing.

`apt-get download NAME=VERSION` (no root needed, nothing installed) fetches a pinned version into a cache folder;
each file's sha256 must equal its pin. A .deb is an `ar` archive holding `data.tar.{xz,gz,bz2,zst}`; members are
read from it in Python, so neither dpkg nor root is needed to extract them.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tarfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..files import sha256_of_file


class PackageError(RuntimeError):
    """A package that cannot be had or used; the message names the .deb files and the folder they belong in."""


@dataclass(frozen=True)
class Pin:
    package: str
    version: str
    architecture: str
    sha256: str

    @property
    def filename(self) -> str:
        """The name `apt-get download` gives the file (an epoch's colon is written %3a)."""
        return f"{self.package}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"


def read_pins(path: str | Path) -> dict[str, Pin]:
    """{package: Pin} from a TSV with columns package, version, architecture, sha256."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {row["package"]: Pin(row["package"], row["version"], row["architecture"], row["sha256"]) for row in rows}


def _download(pins: Sequence[Pin], folder: Path) -> str:
    """Run apt-get download in `folder`; its error output ("" on success)."""
    command = ["apt-get", "download", *(f"{pin.package}={pin.version}" for pin in pins)]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    return "" if done.returncode == 0 else (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}")


def fetch_packages(pins: Sequence[Pin], folder: str | Path) -> dict[str, Path]:
    """{package: verified .deb path}: the files in `folder`, downloaded there first with apt-get when missing.

    Without apt-get (or when it fails) the error lists the .deb files that are missing and where to put them.
    A file whose sha256 differs from its pin is an error naming it, and is left in place for inspection.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    missing = [pin for pin in pins if not (folder / pin.filename).is_file()]
    problem = ""
    if missing and shutil.which("apt-get"):
        problem = _download(missing, folder)
    elif missing:
        problem = "apt-get is not on PATH"
    missing = [pin for pin in missing if not (folder / pin.filename).is_file()]
    if missing:
        listing = "\n".join(f"  {pin.filename}  (sha256 {pin.sha256})" for pin in missing)
        raise PackageError(
            f"Missing Debian package file(s) ({problem}):\n{listing}\nPut them in {folder} (on a machine with apt: "
            f"`cd {folder} && apt-get update && apt-get download "
            f"{' '.join(f'{pin.package}={pin.version}' for pin in missing)}`), then build again."
        )
    for pin in pins:
        actual = sha256_of_file(folder / pin.filename)
        if actual != pin.sha256:
            raise PackageError(
                f"{folder / pin.filename}: sha256 {actual} is not the pinned {pin.sha256} (another build of "
                f"{pin.package} {pin.version}?). Remove it and build again to download the pinned file."
            )
    return {pin.package: folder / pin.filename for pin in pins}


def _ar_members(data: bytes, name: str) -> dict[str, bytes]:
    if data[:8] != b"!<arch>\n":
        raise PackageError(f"{name}: not a Debian package (no ar archive header)")
    members, position = {}, 8
    while position + 60 <= len(data):
        header = data[position : position + 60]
        member = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[member] = data[position + 60 : position + 60 + size]
        position += 60 + size + (size & 1)
    return members


def _data_tar(deb: Path) -> tarfile.TarFile:
    members = _ar_members(deb.read_bytes(), str(deb))
    for name, content in members.items():
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise PackageError(f"{deb}: data.tar.zst needs a zstd decompressor; unpack it with dpkg-deb -x")
            return tarfile.open(fileobj=io.BytesIO(content), mode="r:*")
    raise PackageError(f"{deb}: no data.tar member")


def extract_members(deb: str | Path, wanted: Collection[str], folder: str | Path) -> dict[str, Path]:
    """Write the regular files `wanted` (paths as in the package, without "./") under `folder`; {path: file}.

    One pass over the archive; a wanted path that is missing or not a regular file is an error naming it.
    """
    deb, folder, wanted = Path(deb), Path(folder), set(wanted)
    found: dict[str, Path] = {}
    with _data_tar(deb) as archive:
        for member in archive:
            path = member.name.removeprefix("./")
            if path not in wanted:
                continue
            if not member.isfile():
                raise PackageError(f"{deb.name}: {path} is not a regular file in the package")
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extractfile(member).read())
            found[path] = target
    absent = sorted(wanted - set(found))
    if absent:
        raise PackageError(f"{deb.name}: {len(absent)} file(s) not in the package, e.g. {absent[:3]}")
    return found
