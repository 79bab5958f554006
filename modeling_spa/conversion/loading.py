"""`load_backbone(family, source)`: the one entry point that loads a family's pretrained weights."""

from __future__ import annotations

import os
from collections.abc import Callable

from torch import nn

from . import ast, cnn14, htsat, hub, passt, psla

# Each family's loader lives in the module named after it; adding a family is one module with a `load(source)`
# and one line here.
LOADERS: dict[str, Callable[[str], nn.Module]] = {
    "ast": ast.load,
    "cnn14": cnn14.load,
    "htsat": htsat.load,
    "hub": hub.load,
    "passt": passt.load,
    "psla": psla.load,
}


def load_backbone(family: str, source: str | os.PathLike) -> nn.Module:
    """The backbone module of `family` with the weights of `source`: a file (read with `weights_only` loading, keys
    renamed, the architecture read from it), a release's short name (`releases.RELEASES`: downloaded once into the
    cache, checked against its pinned sha256) or, for AST, CLAP's HTS-AT tower and transformers' speech encoders
    ("hub"), a Hub id or folder."""
    if family not in LOADERS:
        raise ValueError(
            f"The {family!r} backbone cannot load pretrained weights ({source!r}); these can: {sorted(LOADERS)}."
        )
    return LOADERS[family](str(source))
