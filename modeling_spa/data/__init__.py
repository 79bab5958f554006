"""Data: reading audio files (`audio_files`), decoding rows (`decoding`), labels (`labels`), batching (`collate`),
loading builds (`loading`), splits and the hold-out (`splits`), streaming (`streaming`), balanced sampling
(`sampling`) and DataLoaders (`loaders`).

The names below are those of `modeling_spa.data` before it became a room.
"""

from .audio_files import AudioFileError, file_windows, open_audio, read_blocks, stream_windows
from .collate import PADDING_KEY, PADDING_ROW, AudioSetCollator, stand_in_rows
from .decoding import BadAudioError, RandomCrop, decode_audio
from .labels import LabelEncoder
from .loaders import default_num_workers
from .loading import keep_audio_undecoded, load_audioset

__all__ = [
    "PADDING_KEY",
    "PADDING_ROW",
    "AudioFileError",
    "AudioSetCollator",
    "BadAudioError",
    "LabelEncoder",
    "RandomCrop",
    "decode_audio",
    "default_num_workers",
    "file_windows",
    "keep_audio_undecoded",
    "load_audioset",
    "open_audio",
    "read_blocks",
    "stand_in_rows",
    "stream_windows",
]
