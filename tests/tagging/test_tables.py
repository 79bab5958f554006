"""Tables (modeling_spa/tagging/tables.py) as files other people and programs read: created with the permissions any
file the user writes gets, not the private mode of a temporary file."""

import os

import pytest

from modeling_spa.files import write_json
from modeling_spa.tagging.tables import Table

COLUMNS = [("file", "string"), ("error", "string"), ("score_1", "float32")]


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_a_table_gets_the_mode_of_the_users_files(tmp_path, suffix, umask):
    path = tmp_path / f"tags.{suffix}"
    previous = os.umask(umask)
    try:
        table = Table(path, COLUMNS, order=["a.wav", "b.wav"])
        table.start()
        table.write({"file": "a.wav", "error": None, "score_1": 0.25})
        table.write({"file": "b.wav", "error": "empty file (0 bytes), not audio", "score_1": None})
        table.close()
        assert table.finish() == {("a.wav",): False, ("b.wav",): True}
    finally:
        os.umask(previous)
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~umask)


def test_spa_embeds_files_json_too(tmp_path):
    """`files.json` beside the embeddings is written by the package's one atomic JSON writer."""
    previous = os.umask(0o022)
    try:
        write_json(tmp_path / "files.json", ["a.wav"])
    finally:
        os.umask(previous)
    assert oct((tmp_path / "files.json").stat().st_mode & 0o777) == oct(0o644)
    assert (tmp_path / "files.json").read_text() == '[\n  "a.wav"\n]\n'
    assert [p.name for p in tmp_path.iterdir()] == ["files.json"]  # no temporary file left
