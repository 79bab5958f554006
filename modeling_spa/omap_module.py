"""`spa-install-metric`: install the OmAP `evaluate` module for offline use, or publish it as a Hub Space.

The module (`metrics/omap/`, shipped as `modeling_spa.omap_metric`) is self-contained: `omap.py` and its numpy core
`omap_core.py`. It lives under this project's own namespace, `spa-audio-tagging/omap`, never under evaluate's
official `evaluate-metric/` one:

    spa-install-metric                          # then evaluate.load("spa-audio-tagging/omap") works offline
    spa-install-metric --push --id ORG/omap     # create/update the Space ORG/omap (token from HF_TOKEN)

`evaluate.load(name)` falls back to its module cache when the Hub cannot be reached; installing writes the module
there, under `metrics/<org>--omap/<hash>/`, through evaluate's own importable-file machinery.
"""

from __future__ import annotations

import argparse
import os
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

OMAP_MODULE_ID = "spa-audio-tagging/omap"
SPACE_FILES = ("omap.py", "omap_core.py", "README.md", "app.py", "requirements.txt")


def _check_module_id(module_id: str) -> None:
    owner, _, name = module_id.partition("/")
    if not owner or not name or "/" in name:
        raise ValueError(f"The module id must be 'owner/name', got {module_id!r}.")
    if owner.startswith("evaluate-"):
        raise ValueError(f"{owner!r} is one of evaluate's official namespaces; use your own (e.g. {OMAP_MODULE_ID!r}).")


def install_omap_metric(module_id: str = OMAP_MODULE_ID, hf_modules_cache: str | Path | None = None) -> Path:
    """Write the module into evaluate's cache as `module_id`; returns the installed `omap.py`."""
    from evaluate.loading import _create_importable_file, init_dynamic_modules

    _check_module_id(module_id)
    source = resources.files("modeling_spa.omap_metric")
    with ExitStack() as stack:  # a zipped install gives temporary files, a plain one the files themselves
        script, core = (stack.enter_context(resources.as_file(source / name)) for name in ("omap.py", "omap_core.py"))
        modules_path = init_dynamic_modules(hf_modules_cache=hf_modules_cache)
        module_path, _ = _create_importable_file(
            local_path=str(script),
            local_imports=[("omap_core", str(core))],
            additional_files=[],
            dynamic_modules_path=modules_path,
            module_namespace="metrics",
            name=module_id,
            download_mode=None,
        )
    return Path(modules_path).parent.joinpath(*module_path.split(".")).with_suffix(".py")


def publish_omap_metric(repo_id: str = OMAP_MODULE_ID, private: bool = False, token: str | None = None) -> str:
    """Create or update the Space `repo_id` with the module, its card and its Gradio app; returns the commit URL."""
    from huggingface_hub import HfApi

    _check_module_id(repo_id)
    api = HfApi(token=token or os.environ.get("HF_TOKEN"))
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    with resources.as_file(resources.files("modeling_spa.omap_metric")) as folder:
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="space",
            folder_path=str(folder),
            allow_patterns=list(SPACE_FILES),
            commit_message="Upload the OmAP evaluate module",
        )
    return getattr(commit, "commit_url", str(commit))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="spa-install-metric", description=__doc__.splitlines()[0])
    parser.add_argument("--id", default=OMAP_MODULE_ID, help="owner/name of the module (default: %(default)s)")
    parser.add_argument("--push", action="store_true", help="publish it as a Hub Space instead of installing it")
    parser.add_argument("--private", action="store_true", help="with --push: a private Space")
    args = parser.parse_args(argv)
    if args.push:
        print(f"Published the OmAP evaluate module: {publish_omap_metric(args.id, args.private)}")
        return
    path = install_omap_metric(args.id)
    print(f"Installed the OmAP evaluate module at {path}; load it with evaluate.load({args.id!r})")


if __name__ == "__main__":
    main()
