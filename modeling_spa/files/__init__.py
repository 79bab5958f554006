"""File basics every room shares: a file's sha256, atomic writes (JSON or any bytes), the cache folder, downloads
that respect the offline switch, and the two project folders the package reads as data (`metrics/omap`, `hub_cards`)."""

from .download import download, offline
from .local import (
    cache_dir,
    project_folder,
    project_module,
    replace_atomically,
    sha256_of_bytes,
    sha256_of_file,
    write_json,
)

__all__ = [
    "cache_dir",
    "download",
    "offline",
    "project_folder",
    "project_module",
    "replace_atomically",
    "sha256_of_bytes",
    "sha256_of_file",
    "write_json",
]
