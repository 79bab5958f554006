"""The console scripts: `spa-tag` (tag), `spa-convert` (convert), `spa-export` (export), `spa-install-metric`
(metric). Each module is its command's argument parsing and printing; the work is done by the rooms below."""

from .tag import main  # `modeling_spa.cli:main`, the entry point of spa-tag before the rooms

__all__ = ["main"]
