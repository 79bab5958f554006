"""Helpers for the equivalence tests against the peers' own code (DESIGN §8)."""

import torch
from torch import nn


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights where default initialisation hides differences: every parameter, BatchNorm running statistics
    and affine parameters, LayerNorm affine parameters, relative-position tables. With default init (unit norms,
    zero biases, running stats 0/1) outputs are nearly constant, and a comparison proves nothing."""
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if not tensor.is_floating_point():
            continue
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64).to(tensor.dtype)
        if name.endswith("running_var"):
            tensor.copy_(0.5 + noise.abs())  # positive, away from 0
        elif name.endswith(("running_mean", "bias")):
            tensor.copy_(0.1 * noise)
        elif name.endswith("weight") and tensor.dim() == 1:  # norm scales
            tensor.copy_(1.0 + 0.2 * noise)
        else:
            fan_in = tensor[0].numel() if tensor.dim() > 1 else tensor.numel()
            tensor.copy_(noise / max(fan_in, 1) ** 0.5)
    return module.eval()


TORCHAUDIO_WHEEL = "torchaudio==2.9.1"  # its compliance/kaldi.py is pure Python (torch only)


def torchaudio_kaldi():
    """torchaudio's Kaldi-compatible fbank code (`torchaudio.compliance.kaldi`), without torchaudio.

    torchaudio cannot load beside CPU torch (its extensions need CUDA torch, DESIGN §7), but the peers' mel code
    (PaSST, PSLA, AST) calls only `compliance.kaldi`, which is plain torch. The wheel is downloaded once from PyPI
    into the cache, that one file is extracted and imported under a stand-in `torchaudio` package, which is also
    registered in `sys.modules` so that a peer's `import torchaudio` finds it. Skips the test when PyPI cannot be
    reached.
    """
    import importlib.util
    import subprocess
    import sys
    import types
    import zipfile

    import pytest

    from modeling_spa.files import cache_dir

    if "torchaudio" in sys.modules and hasattr(sys.modules["torchaudio"], "compliance"):
        return sys.modules["torchaudio"].compliance.kaldi
    folder = cache_dir() / "peers"
    source = folder / "torchaudio_compliance_kaldi.py"
    if not source.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", TORCHAUDIO_WHEEL, "-d", str(folder)],
            capture_output=True,
            text=True,
        )
        wheels = sorted(folder.glob("torchaudio-*.whl"))
        if done.returncode or not wheels:
            pytest.skip(f"cannot download {TORCHAUDIO_WHEEL} from PyPI: {done.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[-1]) as wheel:
            text = wheel.read("torchaudio/compliance/kaldi.py")
        partial = source.with_suffix(".part")
        partial.write_bytes(text)
        partial.replace(source)
        for wheel in wheels:
            wheel.unlink()
    package = types.ModuleType("torchaudio")
    package.__path__ = []
    package.compliance = types.ModuleType("torchaudio.compliance")
    package.compliance.__path__ = []
    sys.modules.update({"torchaudio": package, "torchaudio.compliance": package.compliance})
    spec = importlib.util.spec_from_file_location("torchaudio.compliance.kaldi", source)
    kaldi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kaldi)
    package.compliance.kaldi = kaldi
    sys.modules["torchaudio.compliance.kaldi"] = kaldi
    return kaldi
