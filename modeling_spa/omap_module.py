"""Install the OmAP `evaluate` module so that `evaluate.load("omap")` works offline, from any directory.

`evaluate.load(name)` tries the Hub (`evaluate-metric/<name>`) and, when that fails, the most recent copy
in its module cache under `evaluate-metric--<name>`. This places `metrics/omap/omap.py` there through
evaluate's own importable-file machinery.
"""

from __future__ import annotations

import argparse
from pathlib import Path

MODULE_SOURCE = Path(__file__).resolve().parent.parent / "metrics" / "omap" / "omap.py"


def install_omap_metric(source: str | Path = MODULE_SOURCE, hf_modules_cache: str | Path | None = None) -> Path:
    """Copy the module into evaluate's cache as `evaluate-metric/omap`; returns the installed file."""
    from evaluate.loading import _create_importable_file, init_dynamic_modules

    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(
            f"OmAP evaluate module not found at {source}. Install from a source checkout "
            "(`pip install -e .`) or pass the path of metrics/omap/omap.py."
        )
    modules_path = init_dynamic_modules(hf_modules_cache=hf_modules_cache)
    module_path, _ = _create_importable_file(
        local_path=str(source),
        local_imports=[],
        additional_files=[],
        dynamic_modules_path=modules_path,
        module_namespace="metrics",
        name="evaluate-metric/omap",
        download_mode=None,
    )
    return Path(modules_path).parent.joinpath(*module_path.split(".")).with_suffix(".py")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="spa-install-metric", description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=MODULE_SOURCE, help="path of metrics/omap/omap.py")
    args = parser.parse_args(argv)
    print(f"Installed the OmAP evaluate module at {install_omap_metric(args.source)}")


if __name__ == "__main__":
    main()
