"""The cluster profile's HDFS without starting it: where it listens, which checkpoint the profile
defaults to, and how a failing HDFS is said."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cinestream.errors import CinestreamError
from cinestream.local.hdfs import LocalHDFS
from cinestream.settings import Settings
from cinestream.stream.checkpoint import check_reachable, storage_error


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(state_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_the_cluster_profile_checkpoints_on_its_hdfs(tmp_path: Path) -> None:
    settings = _settings(tmp_path, profile="cluster")
    assert settings.checkpoint_dir == (
        "hdfs://127.0.0.1:8020/cinestream/checkpoints/ratings_stream_processor"
    )
    assert settings.uses_local_hdfs
    # Ports follow the first Kafka port, like the brokers' and controllers' (9092 -> 8020).
    moved = _settings(tmp_path, profile="cluster", kafka_bootstrap="127.0.0.1:59092")
    assert moved.checkpoint_dir.startswith("hdfs://127.0.0.1:58020/cinestream/")
    pinned = _settings(tmp_path, profile="cluster", hdfs_port=18020)
    assert pinned.local_hdfs_url == "hdfs://127.0.0.1:18020"


def test_single_node_and_explicit_checkpoints_are_kept(tmp_path: Path) -> None:
    single = _settings(tmp_path, profile="single")
    assert single.checkpoint_dir == (tmp_path / "checkpoints/ratings_stream_processor").as_uri()
    assert not single.uses_local_hdfs
    external = _settings(tmp_path, profile="cluster", checkpoint_dir="hdfs://nn.example:8020/c")
    assert external.checkpoint_dir == "hdfs://nn.example:8020/c"
    assert not external.uses_local_hdfs  # the stack starts no HDFS for someone else's


def test_every_daemon_address_is_loopback_and_apart(tmp_path: Path) -> None:
    hdfs = LocalHDFS(_settings(tmp_path, profile="cluster", kafka_bootstrap="127.0.0.1:59092"))
    site = hdfs.site()["hdfs-site.xml"]
    addresses = [v for k, v in site.items() if k.endswith(("-address", ".address"))]
    bound = [a for a in addresses if not a.endswith(":0")]
    assert sorted(bound) == [f"127.0.0.1:{p}" for p in range(58020, 58025)]
    assert all(a.startswith("127.0.0.1:") for a in addresses)
    assert site["dfs.replication"] == "1"
    assert site["dfs.namenode.name.dir"] == (tmp_path / "hdfs/name").as_uri()
    assert hdfs.site()["core-site.xml"]["fs.defaultFS"] == "hdfs://127.0.0.1:58020"
    assert hdfs.ui_url(hdfs.namenode) == "http://127.0.0.1:58021"


def test_a_failing_hdfs_is_one_line_with_the_fix() -> None:
    uri = "hdfs://127.0.0.1:58020/cinestream/checkpoints/x"
    line = storage_error(
        uri,
        "java.net.ConnectException: Call From vm/127.0.0.1 to 127.0.0.1:58020 failed on "
        "connection exception: java.net.ConnectException: Connection refused\n\tat ...",
    )
    assert line is not None and "\n" not in line
    assert line.startswith("the checkpoint's HDFS at hdfs://127.0.0.1:58020 failed")
    assert "fix: start the HDFS NameNode and DataNode" in line
    # Spark's wrapper around the batch function's error: the line said deeper down is kept.
    wrapped = storage_error(
        uri,
        "An exception was raised by the Python Proxy. Return Message: Traceback:\n"
        f"cinestream.errors.CinestreamError: {line}\n",
    )
    assert wrapped == line
    # ...and of a bare Java trace, the line that names the failure.
    missing = storage_error(
        uri,
        "ForeachBatchUserFuncException: error in foreach batch\n"
        "org.apache.hadoop.hdfs.BlockMissingException: Could not obtain block: blk_1 file=/x",
    )
    assert missing is not None and ": org.apache.hadoop.hdfs.BlockMissingException" in missing
    # Not a storage failure, or not a remote checkpoint: said as it was.
    assert storage_error(uri, "KafkaException: topic deleted") is None
    # A refused connection is the storage's only when it names the NameNode's port.
    kafka = "java.net.ConnectException: Connection refused (broker 127.0.0.1:59092)"
    assert storage_error(uri, kafka) is None
    assert storage_error("file:///tmp/c", "Connection refused") is None


def test_an_unreachable_namenode_is_named_before_any_jvm() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed
    uri = f"hdfs://127.0.0.1:{port}/cinestream/checkpoints/x"
    with pytest.raises(CinestreamError) as error:
        check_reachable(uri)
    message = str(error.value)
    assert f"the HDFS NameNode of checkpoint {uri} is not reachable at 127.0.0.1:{port}" in message
    assert "fix:" in message and "\n" not in message
    check_reachable("file:///tmp/c")  # nothing to reach
