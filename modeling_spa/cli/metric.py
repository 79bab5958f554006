"""`spa-install-metric`: install the OmAP evaluate module into evaluate's cache, or publish it as a Hub Space.

spa-install-metric                          # then evaluate.load("omap") and ("spa-audio-tagging/omap") work
spa-install-metric --push --id ORG/omap     # create/update the Space ORG/omap (token from HF_TOKEN)
"""

from __future__ import annotations

import argparse

from ..metrics.evaluate_module import OMAP_MODULE_ID, install_omap_metric, publish_omap_metric


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="spa-install-metric", description=__doc__.splitlines()[0])
    parser.add_argument("--id", default=OMAP_MODULE_ID, help="owner/name of the module (default: %(default)s)")
    parser.add_argument("--push", action="store_true", help="publish it as a Hub Space instead of installing it")
    parser.add_argument("--private", action="store_true", help="with --push: a private Space")
    parser.add_argument("--no-bare-alias", action="store_true", help="do not install it as the bare name 'omap'")
    args = parser.parse_args(argv)
    if args.push:
        print(f"Published the OmAP evaluate module: {publish_omap_metric(args.id, args.private)}")
        return
    paths = install_omap_metric(args.id, bare_alias=not args.no_bare_alias)
    loads = [args.id] + ([] if args.no_bare_alias else ["omap"])
    print(f"Installed the OmAP evaluate module at {', '.join(map(str, paths))}; load it with "
          + " or ".join(f"evaluate.load({name!r})" for name in loads))  # fmt: skip


if __name__ == "__main__":
    main()
