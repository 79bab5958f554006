"""Loading an AudioSet-format `datasets` build (a `save_to_disk` folder, parquet, or a Hub id) with its audio left
undecoded: `Audio(decode=False)` ({bytes, path}), decoded by `data.decoding` in the DataLoader workers (datasets 5
decodes only through torchcodec, which needs CUDA torch; DESIGN.md section 5)."""

from __future__ import annotations

import os


def load_audioset(source: str, split: str | None = None, config_name: str | None = None):
    """A `datasets` AudioSet build: a `save_to_disk` folder, a parquet folder/file, or a Hub id.

    The audio column is cast to `Audio(decode=False)` so that no torchcodec decoding is attempted.
    """
    import datasets

    if os.path.isdir(source) and (
        os.path.isfile(os.path.join(source, "dataset_dict.json")) or os.path.isfile(os.path.join(source, "state.json"))
    ):
        data = datasets.load_from_disk(source)
        data = data[split] if split is not None and isinstance(data, datasets.DatasetDict) else data
    elif source.endswith(".parquet"):
        data = datasets.load_dataset("parquet", data_files=source, split=split or "train")
    else:
        data = datasets.load_dataset(source, config_name, split=split)
    return keep_audio_undecoded(data)


def keep_audio_undecoded(data):
    """A Dataset, IterableDataset or dict of them with its `audio` column cast to `Audio(decode=False)`."""
    import datasets

    def cast(ds):
        audio = (ds.features or {}).get("audio")  # a stream may not know its features: nothing decodes then
        if isinstance(audio, datasets.Audio) and audio.decode:
            return ds.cast_column("audio", datasets.Audio(decode=False))
        return ds

    return datasets.DatasetDict({k: cast(v) for k, v in data.items()}) if isinstance(data, dict) else cast(data)
