"""The recipes are scripts, not a package: the tests load one as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def load_recipe(name: str):
    """A recipe script as a module named `recipe_<name>`: `recipes/evaluate.py` must not shadow the `evaluate`
    library in sys.modules."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
