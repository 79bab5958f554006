"""Shared fixtures. The real AudioSet files come from ../shared/audioset unless the environment names them."""

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "audioset"

if (SHARED / "ontology.json").is_file():
    os.environ.setdefault("SPA_ONTOLOGY", str(SHARED / "ontology.json"))
    os.environ.setdefault("SPA_CLASS_LABELS", str(SHARED / "class_labels_indices.csv"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# The test files that take longest (pytest --durations, summed per file), started first: `make test` runs them on two
# workers, one file at a time each (-n 2 --dist loadfile --no-loadscope-reorder), and a long file taken last would
# leave one worker running it alone. Only the order changes; every test still runs.
SLOW_FIRST = [
    "training/test_train.py", "tagging/test_tag_collections.py", "recipes/test_reproduce.py",
    "recipes/test_fine_tune_doc.py", "test_packaging.py", "data/test_streaming.py", "export/test_onnx_export.py",
    "backbones/test_backbone_htsat.py", "metrics/test_evaluate_module.py", "backbones/test_backbone_hub.py",
    "backbones/test_backbone_cnn14.py", "backbones/test_backbone_psla.py", "backbones/test_backbone_passt.py",
    "builds/test_build_audioset.py",
]  # fmt: skip


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.path.resolve()
        name = path.relative_to(REPO / "tests").as_posix() if path.is_relative_to(REPO / "tests") else ""
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the tests of a file keep their order


def tiny_ast_config(**overrides):
    """A one-layer, 32-wide AST over 100 frames of 128 mel bins: small enough for any test."""
    from transformers import ASTConfig

    return ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_length=100,
                     num_mel_bins=128, frequency_stride=16, time_stride=16, **overrides)  # fmt: skip


def free_port() -> str:
    """A port nothing listens on, for torch.distributed's rendezvous (29500 may be taken by another run)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ontology():
    from modeling_spa.taxonomy import AudioSetOntology

    return AudioSetOntology.load()


@pytest.fixture(scope="session")
def mid_of(ontology):
    """Label display name -> mid."""
    return dict(zip(ontology.label_names, ontology.label_mids, strict=True))


@pytest.fixture(scope="session")
def shared_audioset():
    if not (SHARED / "ontology.json").is_file():
        pytest.skip("../shared/audioset is not beside this checkout")
    return SHARED
