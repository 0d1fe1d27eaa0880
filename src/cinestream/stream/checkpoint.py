"""Reading a Structured Streaming checkpoint's offset log (local paths or any Hadoop FS)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cinestream.errors import CinestreamError


class CheckpointFS(Protocol):
    """The three reads the start plan needs from a checkpoint's storage."""

    def list_names(self, directory: str) -> list[str]: ...
    def read_text(self, path: str) -> str: ...
    def exists(self, path: str) -> bool: ...


def parse_offsets_file(text: str) -> dict[str, dict[int, int]]:
    """``offsets/<batch>`` holds "v1", the batch metadata, then one JSON line per source."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("v"):
        raise ValueError("not a Structured Streaming offsets file")
    result: dict[str, dict[int, int]] = {}
    for line in lines[2:]:
        if line.strip() == "-":
            continue
        for topic, partitions in json.loads(line).items():
            result[topic] = {int(p): int(o) for p, o in partitions.items()}
    return result


def latest_batch(names: list[str]) -> int | None:
    """The highest batch id among a log directory's file names."""
    batches = [int(n) for n in names if n.isdigit()]
    return max(batches) if batches else None


class LocalFS:
    """``file://`` URIs and plain paths."""

    @staticmethod
    def _path(uri: str) -> Path:
        parts = urlsplit(uri)
        return Path(parts.path if parts.scheme == "file" else uri)

    def list_names(self, directory: str) -> list[str]:
        """Names of the entries of a directory (empty if it does not exist)."""
        path = self._path(directory)
        return [p.name for p in path.iterdir()] if path.is_dir() else []

    def read_text(self, path: str) -> str:
        """A file's text."""
        return self._path(path).read_text()

    def exists(self, path: str) -> bool:
        """True when the path exists."""
        return self._path(path).exists()

    def delete(self, path: str) -> bool:
        """Delete a file and Hadoop's checksum file beside it."""
        target = self._path(path)
        target.with_name(f".{target.name}.crc").unlink(missing_ok=True)
        if not target.exists():
            return False
        target.unlink()
        return True


class HadoopFS:
    """Any Hadoop-compatible URI (hdfs://, s3a://, file://) through the Spark driver's JVM."""

    def __init__(self, spark: Any) -> None:
        self._jvm = spark._jvm
        self._conf = spark._jsc.hadoopConfiguration()

    def _fs(self, uri: str) -> tuple[Any, Any]:
        path = self._jvm.org.apache.hadoop.fs.Path(uri)
        return path.getFileSystem(self._conf), path

    def list_names(self, directory: str) -> list[str]:
        """Names of the entries of a directory (empty if it does not exist)."""
        fs, path = self._fs(directory)
        if not fs.exists(path):
            return []
        return [status.getPath().getName() for status in fs.listStatus(path)]

    def read_text(self, path: str) -> str:
        """A file's text."""
        fs, p = self._fs(path)
        stream = fs.open(p)
        try:
            return str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def exists(self, path: str) -> bool:
        """True when the path exists."""
        fs, p = self._fs(path)
        return bool(fs.exists(p))

    def delete(self, path: str) -> bool:
        """Delete a file (its checksum file too, on a checksummed file system)."""
        fs, p = self._fs(path)
        return bool(fs.delete(p, False))


def checkpoint_offsets(
    fs: CheckpointFS, checkpoint: str, batch_id: int | None = None
) -> tuple[int | None, dict[str, dict[int, int]]]:
    """(batch id, end offsets) of ``batch_id`` or of the newest batch in the offset log."""
    directory = checkpoint.rstrip("/") + "/offsets"
    if batch_id is None:
        batch_id = latest_batch(fs.list_names(directory))
        if batch_id is None:
            return None, {}
    return batch_id, parse_offsets_file(fs.read_text(f"{directory}/{batch_id}"))


def initial_offsets(fs: CheckpointFS, checkpoint: str) -> dict[str, dict[int, int]]:
    """Where the checkpoint's query started (the Kafka source's ``sources/0/0``: a zero byte,
    "v1", then the offsets' JSON); empty when the query has not started yet."""
    path = checkpoint.rstrip("/") + "/sources/0/0"
    if not fs.exists(path):
        return {}
    text = fs.read_text(path).lstrip("\x00")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("v"):
        raise ValueError(f"{path} is not a Kafka source's initial offsets")
    return {
        topic: {int(p): int(o) for p, o in partitions.items()}
        for topic, partitions in json.loads("".join(lines[1:])).items()
    }


def query_id(fs: CheckpointFS, checkpoint: str) -> str | None:
    """The id in the checkpoint's ``metadata`` (one per checkpoint, kept across restarts)."""
    path = checkpoint.rstrip("/") + "/metadata"
    if not fs.exists(path):
        return None
    value = json.loads(fs.read_text(path).splitlines()[0]).get("id")
    return None if value is None else str(value)


def committed_batch(fs: CheckpointFS, checkpoint: str) -> int | None:
    """The newest batch Spark's commit log marks done."""
    return latest_batch(fs.list_names(checkpoint.rstrip("/") + "/commits"))


class WritableCheckpointFS(CheckpointFS, Protocol):
    """A checkpoint's storage that can also delete a log entry."""

    def delete(self, path: str) -> bool: ...


def mark_not_done(fs: WritableCheckpointFS, checkpoint: str, batch_id: int) -> list[str]:
    """Make Spark run ``batch_id`` again at the next start, over the same offsets: remove its
    entry in the commit log and the offsets of any batch planned after it (never run to the end,
    so nothing of them is committed anywhere). The deleted paths."""
    base = checkpoint.rstrip("/")
    if committed_batch(fs, checkpoint) != batch_id:
        raise CinestreamError(f"batch {batch_id} is not the last one done in {checkpoint}")
    latest = latest_batch(fs.list_names(f"{base}/offsets"))
    deleted = [f"{base}/offsets/{b}" for b in range(latest or batch_id, batch_id, -1)]
    deleted.append(f"{base}/commits/{batch_id}")
    for path in deleted:
        fs.delete(path)
    return deleted


def delete_local_checkpoint(checkpoint: str) -> bool:
    """Delete a ``file://`` checkpoint; other schemes must be removed with their own tools."""
    parts = urlsplit(checkpoint)
    if parts.scheme not in ("", "file"):
        raise CinestreamError(
            f"cannot delete {checkpoint} from here: remove it with the storage's tools "
            f"(e.g. `hadoop fs -rm -r -f {checkpoint}`)"
        )
    path = Path(parts.path)
    if path.exists():
        shutil.rmtree(path)
        return True
    return False
