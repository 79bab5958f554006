"""Conversion: the authors' AudioSet checkpoints of the paper's backbones into SPA backbones, and new SPA models.

- `load_backbone(family, source)`: the one entry point. `source` is a file (read with `weights_only` loading, keys
  renamed, the architecture read from the file), a release's short name (`releases.RELEASES`: downloaded once into
  the cache and checked against its pinned sha256) or, for AST and CLAP's HTS-AT tower, a Hub id or folder.
- `from_backbone(...)` (`building.py`): a new SPA model around a backbone; attached to `SPAForAudioClassification`.
- `convert(...)` (`convert.py`, the work of `spa-convert`): a converted checkpoint as an SPA model folder.

Each family's loader lives in the module named after it; adding a family is one module with a `load(source)` and
one line in `LOADERS`.
"""

from .building import from_backbone, rehead
from .checkpoints import CheckpointError
from .loading import LOADERS, load_backbone
from .releases import FAMILY_LICENCES, RELEASES, Release, releases_of

__all__ = [
    "FAMILY_LICENCES",
    "LOADERS",
    "RELEASES",
    "CheckpointError",
    "Release",
    "from_backbone",
    "rehead",
    "load_backbone",
    "releases_of",
]
