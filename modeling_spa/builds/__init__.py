"""Dataset builders: AudioSet-format parquet builds written resumably (`shards`), from the AudioSet release's
segment CSVs (`audioset`), from real recordings inside pinned Debian packages (`debian`, `qt_rcc`, `mixtures`), and
from synthetic sounds (`synthetic`). The recipes `recipes/build_*.py` drive them.

The names below are those of `modeling_spa.builds` before it became a room (the flat `builds.py`, now `shards`).
"""

from .shards import (
    DATA_DIR,
    FORMAT_VERSION,
    REPORT_FILE,
    BuildError,
    BuildResult,
    ClipTask,
    Skip,
    audio_row,
    audioset_features,
    build_report,
    build_shards,
    encode_clip,
    encode_flac,
    pending_shards,
    push_build,
    read_audio,
    render_dataset_card,
    report_summary,
)

__all__ = [
    "DATA_DIR",
    "FORMAT_VERSION",
    "REPORT_FILE",
    "BuildError",
    "BuildResult",
    "ClipTask",
    "Skip",
    "audio_row",
    "audioset_features",
    "build_report",
    "build_shards",
    "encode_clip",
    "encode_flac",
    "pending_shards",
    "push_build",
    "read_audio",
    "render_dataset_card",
    "report_summary",
]
