"""Module paths of the flat layout that preceded the rooms, kept working with a FutureWarning.

`import modeling_spa.diagnostics` gives `modeling_spa.analysis.diagnostics` itself (the same module object, so its
classes and functions are the new ones), and `python -m modeling_spa.diagnostics` runs the new module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "modeling_spa.ontology": "modeling_spa.taxonomy.audioset",
    "modeling_spa.ontology_files": "modeling_spa.taxonomy.audioset",
    "modeling_spa.diagnostics": "modeling_spa.analysis.diagnostics",
    "modeling_spa.label_geometry": "modeling_spa.analysis.label_geometry",
    "modeling_spa.zero_shot": "modeling_spa.analysis.zero_shot",
    "modeling_spa.reporting": "modeling_spa.analysis.reporting",
    "modeling_spa.hub_cards": "modeling_spa.hub.cards",
    "modeling_spa.publish": "modeling_spa.hub.publish",
    "modeling_spa.omap_module": "modeling_spa.metrics.evaluate_module",
    "modeling_spa.checkpoints": "modeling_spa.conversion.checkpoints",
    "modeling_spa.convert": "modeling_spa.cli.convert",
    "modeling_spa.debian_packages": "modeling_spa.builds.debian",
    "modeling_spa.qt_rcc": "modeling_spa.builds.qt_rcc",
    "modeling_spa.mixtures": "modeling_spa.builds.mixtures",
    "modeling_spa.demo_sounds": "modeling_spa.builds.synthetic",
    "modeling_spa.segments": "modeling_spa.builds.audioset",
    "modeling_spa.averaging": "modeling_spa.training.averaging",
    "modeling_spa.optimization": "modeling_spa.training.optimization",
    "modeling_spa.splits": "modeling_spa.data.splits",
    "modeling_spa.streaming": "modeling_spa.data.streaming",
    "modeling_spa.sampling": "modeling_spa.data.sampling",
    "modeling_spa.loaders": "modeling_spa.data.loaders",
    "modeling_spa.onnx_export": "modeling_spa.export.onnx",
    "modeling_spa.onnx_tagger": "modeling_spa.export.onnx_tagger",
}


class _MovedModule(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        warnings.warn(
            f"{spec.name} has moved to {self.target}; import it from there (the old path will be removed).",
            FutureWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        """The new module ran when it was imported."""

    def get_code(self, name: str):
        """`python -m OLD` runs the new module as the main module, in its own package (its relative imports)."""
        return compile(f"import runpy\nrunpy.run_module({self.target!r}, run_name='__main__', alter_sys=True)\n",
                       f"<{name}, moved to {self.target}>", "exec")  # fmt: skip


class _MovedModules(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path=None, target=None):
        if name in MOVED:
            return importlib.util.spec_from_loader(name, _MovedModule(MOVED[name]))
        return None


def install() -> None:
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
