"""Run code against a saved checkpoint through transformers' remote code, in a subprocess where the SPA package
cannot be imported: what a user without `modeling_spa` installed gets from `trust_remote_code=True`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

PRELUDE = """
import sys, json
class Block:  # the installed package must not be importable here
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_spa" or name.startswith("modeling_spa."):
            raise ImportError("blocked for this test")
sys.meta_path.insert(0, Block())
try:
    import modeling_spa
    raise SystemExit("modeling_spa was importable")
except ImportError:
    pass
import numpy as np, torch
from transformers import AutoFeatureExtractor, AutoModel
path = sys.argv[1]
arrays = dict(np.load(sys.argv[2])) if len(sys.argv) > 2 else {}
model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
"""


def run_without_package(checkpoint: Path, body: str, tmp_path: Path, **arrays: np.ndarray) -> dict:
    """Run `body` after the prelude (which gives it `model`, loaded from `checkpoint` through remote code, `path`,
    `np`, `torch`, `AutoFeatureExtractor` and `arrays`, the keyword arrays by name) in a fresh interpreter without
    this package on its path; `body` sets `result`, a JSON-able dict, which is returned."""
    script = tmp_path / "remote.py"
    script.write_text(PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(result))\n")
    argv = [sys.executable, str(script), str(checkpoint)]
    if arrays:
        np.savez(tmp_path / "arrays.npz", **arrays)
        argv.append(str(tmp_path / "arrays.npz"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
