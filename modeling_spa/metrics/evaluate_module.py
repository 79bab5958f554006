"""The OmAP `evaluate` module (`metrics/omap/`): installing it into evaluate's cache, or publishing it as a Space.

The module is self-contained (`omap.py` with `omap_core.py` and `ontology_distances.py` beside it; evaluate, datasets
and numpy), laid out as the evaluate repository lays out its metrics, ready to be contributed there. Installing writes
it into evaluate's module cache twice, through evaluate's own importable-file machinery:

- as this project's `spa-audio-tagging/omap` (`metrics/spa-audio-tagging--omap/<hash>/`), and
- as a local alias of the bare name `omap` (`metrics/evaluate-metric--omap/<hash>/`): `evaluate.load("omap")`
  first asks the Hub for the canonical `evaluate-metric/omap`, which does not exist, then falls back to that cache
  entry, online and offline alike. Nothing is written to the Hub's `evaluate-metric` namespace.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..files import project_folder

OMAP_MODULE_ID = "spa-audio-tagging/omap"
BARE_ALIAS = "evaluate-metric/omap"  # where evaluate's cache lookup of a bare name looks (evaluation_module_factory)
CORE_FILES = ("omap_core.py", "ontology_distances.py")  # what omap.py imports relatively
SPACE_FILES = ("omap.py", *CORE_FILES, "README.md", "app.py", "requirements.txt")


def _check_module_id(module_id: str) -> None:
    owner, _, name = module_id.partition("/")
    if not owner or not name or "/" in name:
        raise ValueError(f"The module id must be 'owner/name', got {module_id!r}.")
    if owner.startswith("evaluate-"):
        raise ValueError(f"{owner!r} is one of evaluate's official namespaces; use your own (e.g. {OMAP_MODULE_ID!r}).")


def _install_as(name: str, hf_modules_cache: str | Path | None) -> Path:
    from evaluate.loading import _create_importable_file, init_dynamic_modules

    folder = project_folder("metrics/omap")
    # init_dynamic_modules also puts the cache on sys.path. Left there, another cache than evaluate's own would come
    # first when this process next imports `evaluate_modules` (any later evaluate.load), and hide evaluate's.
    search_path = list(sys.path)
    try:
        modules_path = init_dynamic_modules(hf_modules_cache=hf_modules_cache)
        module_path, _ = _create_importable_file(
            local_path=str(folder / "omap.py"),
            local_imports=[(Path(core).stem, str(folder / core)) for core in CORE_FILES],
            additional_files=[],
            dynamic_modules_path=modules_path,
            module_namespace="metrics",
            name=name,
            download_mode=None,
        )
    finally:
        sys.path[:] = search_path
    script = Path(modules_path).parent.joinpath(*module_path.split(".")).with_suffix(".py")
    os.utime(script)  # evaluate's cache lookup takes the most recently modified version: this one
    return script


def install_omap_metric(
    module_id: str = OMAP_MODULE_ID, hf_modules_cache: str | Path | None = None, bare_alias: bool = True
) -> list[Path]:
    """Write the module into evaluate's cache as `module_id`, and as the bare name `omap` unless `bare_alias` is
    False; returns the installed `omap.py` files."""
    _check_module_id(module_id)
    names = [module_id, *([BARE_ALIAS] if bare_alias else [])]
    return [_install_as(name, hf_modules_cache) for name in names]


def publish_omap_metric(repo_id: str = OMAP_MODULE_ID, private: bool = False, token: str | None = None) -> str:
    """Create or update the Space `repo_id` with the module, its card and its Gradio app; returns the commit URL."""
    from huggingface_hub import HfApi

    _check_module_id(repo_id)
    api = HfApi(token=token or os.environ.get("HF_TOKEN"))
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="space",
        folder_path=str(project_folder("metrics/omap")),
        allow_patterns=list(SPACE_FILES),
        commit_message="Upload the OmAP evaluate module",
    )
    return getattr(commit, "commit_url", str(commit))
