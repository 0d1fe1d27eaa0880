from __future__ import annotations

from pathlib import Path

import pytest

from cinestream.stream.checkpoint import (
    LocalFS,
    checkpoint_offsets,
    latest_batch,
    parse_offsets_file,
)

OFFSETS = """v1
{"batchWatermarkMs":0,"batchTimestampMs":1764000000000,"conf":{}}
{"ratings":{"2":104092,"1":95995,"0":99913}}
"""


def test_parse_offsets_file() -> None:
    assert parse_offsets_file(OFFSETS) == {"ratings": {0: 99913, 1: 95995, 2: 104092}}


def test_not_an_offsets_file() -> None:
    with pytest.raises(ValueError):
        parse_offsets_file("garbage")


def test_latest_batch_ignores_temp_files() -> None:
    assert latest_batch(["0", "1", "10", ".10.tmp", "2"]) == 10
    assert latest_batch([]) is None


def test_checkpoint_offsets_reads_the_newest_batch(tmp_path: Path) -> None:
    (tmp_path / "offsets").mkdir()
    (tmp_path / "offsets" / "0").write_text(OFFSETS.replace("99913", "5"))
    (tmp_path / "offsets" / "1").write_text(OFFSETS)
    batch, offsets = checkpoint_offsets(LocalFS(), tmp_path.as_uri())
    assert batch == 1 and offsets["ratings"][0] == 99913
    assert checkpoint_offsets(LocalFS(), (tmp_path / "none").as_uri()) == (None, {})
