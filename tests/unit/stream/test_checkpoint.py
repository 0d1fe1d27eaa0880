from __future__ import annotations

from pathlib import Path

import pytest

from cinestream.errors import CinestreamError
from cinestream.stream.checkpoint import LocalFS
from cinestream.stream.checkpoint_log import (
    checkpoint_offsets,
    committed_batch,
    latest_batch,
    mark_not_done,
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


def _log(tmp_path: Path, offsets: int, commits: int) -> None:
    for name, upto in (("offsets", offsets), ("commits", commits)):
        (tmp_path / name).mkdir(exist_ok=True)
        for b in range(upto + 1):
            (tmp_path / name / str(b)).write_text(OFFSETS)
            (tmp_path / name / f".{b}.crc").write_bytes(b"crc")


def test_mark_not_done_makes_spark_run_the_batch_again(tmp_path: Path) -> None:
    # Batch 2 was handed off and marked done; batch 3 was planned and never finished.
    _log(tmp_path, offsets=3, commits=2)
    deleted = mark_not_done(LocalFS(), tmp_path.as_uri(), 2)
    assert deleted == [f"{tmp_path.as_uri()}/offsets/3", f"{tmp_path.as_uri()}/commits/2"]
    assert sorted(p.name for p in (tmp_path / "offsets").iterdir()) == [
        ".0.crc",
        ".1.crc",
        ".2.crc",
        "0",
        "1",
        "2",
    ]
    assert sorted(p.name for p in (tmp_path / "commits").iterdir()) == [
        ".0.crc",
        ".1.crc",
        "0",
        "1",
    ]
    assert committed_batch(LocalFS(), tmp_path.as_uri()) == 1


def test_mark_not_done_without_a_planned_batch_after_it(tmp_path: Path) -> None:
    _log(tmp_path, offsets=0, commits=0)
    mark_not_done(LocalFS(), tmp_path.as_uri(), 0)
    assert committed_batch(LocalFS(), tmp_path.as_uri()) is None
    assert checkpoint_offsets(LocalFS(), tmp_path.as_uri())[0] == 0


def test_mark_not_done_refuses_any_batch_but_the_last_done(tmp_path: Path) -> None:
    _log(tmp_path, offsets=3, commits=2)
    with pytest.raises(CinestreamError, match="not the last one done"):
        mark_not_done(LocalFS(), tmp_path.as_uri(), 1)
    assert committed_batch(LocalFS(), tmp_path.as_uri()) == 2  # nothing deleted
