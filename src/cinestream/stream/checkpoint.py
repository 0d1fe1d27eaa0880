"""Where a Structured Streaming checkpoint lives: local paths or any Hadoop FS (what its log says is
read by :mod:`cinestream.stream.checkpoint_log`).

A ``file://`` checkpoint is read with plain Python (:class:`LocalFS`); any other URI through
Hadoop: inside a job the Spark driver's ``FileSystem`` (:class:`HadoopFS`); in commands without a
SparkSession (``doctor``, ``reset``, Airflow's ``clear_checkpoint`` and preflight tasks), opened
by :func:`checkpoint_fs`, Hadoop's shell for ``hdfs://`` (:class:`ShellFS`) and a py4j gateway
of pyspark's for other schemes.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cinestream.errors import CinestreamError
from cinestream.net import port_open

# What a failing HDFS says (DataNode gone, safe mode), in the Java exception's text...
HDFS_FAILURES = (
    "could only be written to",
    "Could not obtain block",
    "BlockMissingException",
    "No live nodes",
    "SafeModeException",
    "All datanodes",
    "DataStreamer",
    "LeaseExpiredException",
    "org.apache.hadoop.hdfs",
)
# ...and what any unreachable server says (the NameNode gone): the storage's only when the same
# text names the NameNode's port (a Kafka broker refusing a connection is not HDFS failing).
CONNECTION_FAILURES = (
    "Call From",
    "ConnectException",
    "Connection refused",
    "EOFException",
    "Failed to connect to",
    "RetriableException",
)


def is_local(checkpoint: str) -> bool:
    """True for a ``file://`` URI or a plain path."""
    return urlsplit(checkpoint).scheme in ("", "file")


def storage_fix(checkpoint: str) -> str:
    """How to bring a checkpoint's storage back, as a fix line says it."""
    parts = urlsplit(checkpoint)
    if parts.scheme == "hdfs":
        return (
            f"start the HDFS NameNode and DataNode of {parts.scheme}://{parts.netloc} (the "
            "cluster profile: cinestream up; `cinestream status` lists hdfs-namenode and "
            "hdfs-datanode) or point CINESTREAM_CHECKPOINT_DIR at a reachable HDFS; the next "
            "run resumes from the checkpoint"
        )
    return f"make {parts.scheme}://{parts.netloc} reachable, then run again"


def storage_error(checkpoint: str, message: str) -> str | None:
    """One line naming the checkpoint's storage when ``message`` is its failure, else None."""
    if is_local(checkpoint):
        return None
    parts = urlsplit(checkpoint)
    names_port = re.search(rf"[:\"]{parts.port or 8020}\b", message) is not None
    hints = HDFS_FAILURES + (CONNECTION_FAILURES if names_port else ())
    if not any(hint in message for hint in hints):
        return None
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        # Said already, deeper down (a read in the batch function, re-raised by Spark).
        said = line.find("the checkpoint's ")
        if said >= 0 and "; fix: " in line:
            return line[said:]
    what = "HDFS" if parts.scheme == "hdfs" else parts.scheme
    # The line that names the failure, not the wrapper's ("An exception was raised by ...").
    cause = next((x for x in lines if any(h in x for h in hints)), message)
    return (
        f"the checkpoint's {what} at {parts.scheme}://{parts.netloc} failed ({checkpoint}): "
        f"{cause[:300]}; fix: {storage_fix(checkpoint)}"
    )


def check_reachable(checkpoint: str) -> None:
    """For ``hdfs://host:port``: raise one line naming the URI and the fix when nothing listens
    there (the JVM's client would retry for many seconds before saying so)."""
    parts = urlsplit(checkpoint)
    if parts.scheme != "hdfs" or not parts.hostname:
        return
    port = parts.port or 8020
    if not port_open(parts.hostname, port, timeout=2):
        raise CinestreamError(
            f"the HDFS NameNode of checkpoint {checkpoint} is not reachable at "
            f"{parts.hostname}:{port}; fix: {storage_fix(checkpoint)}"
        )


class CheckpointFS(Protocol):
    """The three reads the start plan needs from a checkpoint's storage."""

    def list_names(self, directory: str) -> list[str]: ...
    def read_text(self, path: str) -> str: ...
    def exists(self, path: str) -> bool: ...


class WritableCheckpointFS(CheckpointFS, Protocol):
    """A checkpoint's storage that can also delete a log entry."""

    def delete(self, path: str) -> bool: ...


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

    def delete_tree(self, path: str) -> bool:
        """Delete a directory and everything in it; False when there was none."""
        target = self._path(path)
        if not target.exists():
            return False
        shutil.rmtree(target)
        return True


class HadoopFS:
    """Any Hadoop-compatible URI (hdfs://, s3a://, file://) through Hadoop's FileSystem in a JVM:
    the Spark driver's (``HadoopFS(spark)``) or a gateway's (``HadoopFS(jvm=..., conf=...)``).
    A failure of the storage is one line naming it (:func:`storage_error`), not a Java trace."""

    def __init__(self, spark: Any = None, *, jvm: Any = None, conf: Any = None) -> None:
        self._jvm = jvm if spark is None else spark._jvm
        self._conf = conf if spark is None else spark._jsc.hadoopConfiguration()

    def _fs(self, uri: str) -> tuple[Any, Any]:
        path = self._jvm.org.apache.hadoop.fs.Path(uri)
        return path.getFileSystem(self._conf), path

    @contextlib.contextmanager
    def _calling(self, uri: str) -> Iterator[None]:
        from py4j.protocol import Py4JJavaError

        try:
            yield
        except Py4JJavaError as exc:
            text = str(exc.java_exception.toString())
            raise CinestreamError(
                storage_error(uri, text) or f"reading {uri} failed: {text[:400]}"
            ) from exc

    def list_names(self, directory: str) -> list[str]:
        """Names of the entries of a directory (empty if it does not exist)."""
        with self._calling(directory):
            fs, path = self._fs(directory)
            if not fs.exists(path):
                return []
            return [status.getPath().getName() for status in fs.listStatus(path)]

    def read_text(self, path: str) -> str:
        """A file's text."""
        with self._calling(path):
            fs, p = self._fs(path)
            stream = fs.open(p)
            try:
                return str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
            finally:
                stream.close()

    def exists(self, path: str) -> bool:
        """True when the path exists."""
        with self._calling(path):
            fs, p = self._fs(path)
            return bool(fs.exists(p))

    def delete(self, path: str) -> bool:
        """Delete a file (its checksum file too, on a checksummed file system)."""
        with self._calling(path):
            fs, p = self._fs(path)
            return bool(fs.delete(p, False))

    def delete_tree(self, path: str) -> bool:
        """Delete a directory and everything in it; False when there was none."""
        with self._calling(path):
            fs, p = self._fs(path)
            return bool(fs.exists(p)) and bool(fs.delete(p, True))


class ShellFS:
    """An ``hdfs://`` checkpoint through Hadoop's own shell (``hdfs dfs``: FsShell from the HDFS
    jars, ``infra/hadoop/pom.xml``), for commands without a SparkSession. A JVM per call, so the
    reads come from one local copy of the checkpoint (``-copyToLocal``, taken at the first
    read: a consistent picture for one start plan); deletes go to HDFS. About 2 s a call here,
    where a py4j gateway of pyspark's takes 7-14 s to start."""

    def __init__(self, checkpoint: str, workdir: Path) -> None:
        self.checkpoint = checkpoint.rstrip("/")
        self.workdir = workdir
        self._copy: Path | None = None

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``hdfs dfs <args>`` (a NameNode that does not answer fails it in about a second)."""
        from cinestream.jars import jars

        conf = self.workdir / "conf"
        if not conf.is_dir():
            # The shell wants a core-site.xml on its class path; the URIs are full, so it is
            # empty. Its own log lines: warnings and up, on stderr.
            conf.mkdir(parents=True)
            (conf / "core-site.xml").write_text("<configuration/>\n")
            (conf / "log4j.properties").write_text(
                "log4j.rootLogger=WARN,err\n"
                "log4j.appender.err=org.apache.log4j.ConsoleAppender\n"
                "log4j.appender.err.target=System.err\n"
                "log4j.appender.err.layout=org.apache.log4j.PatternLayout\n"
                "log4j.appender.err.layout.ConversionPattern=%p %c{1}: %m%n\n"
                "log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR\n"
            )
        classpath = ":".join([str(conf), *(str(j) for j in jars("hadoop"))])
        return subprocess.run(
            [
                "java",
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                classpath,
                "org.apache.hadoop.fs.FsShell",
                "-D",
                "ipc.client.connect.max.retries=2",
                "-D",
                "ipc.client.connect.retry.interval=500",
                "-D",
                "dfs.client.retry.window.base=200",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )

    def _fail(self, what: str, result: subprocess.CompletedProcess[str]) -> CinestreamError:
        lines = [
            x
            for x in (result.stdout + result.stderr).splitlines()
            if x.strip() and not x.startswith(("log4j:", "SLF4J"))
        ]
        text = " | ".join(lines[-3:]) or f"exit code {result.returncode}"
        return CinestreamError(
            storage_error(self.checkpoint, text) or f"hdfs dfs {what} failed: {text[:400]}"
        )

    def _snapshot(self) -> Path:
        """The local copy of the checkpoint (an empty directory when there is none)."""
        if self._copy is not None:
            return self._copy
        target = self.workdir / "copy"
        target.mkdir(parents=True, exist_ok=True)
        result = self.run("-copyToLocal", self.checkpoint, str(target))
        name = self.checkpoint.rsplit("/", 1)[1]
        if result.returncode != 0:
            errors = [x for x in result.stderr.splitlines() if x.startswith(("copyToLocal", "-"))]
            missing = f"`{self.checkpoint}': No such file or directory"
            # A checkpoint that is not there yet, or a temp file the running processor renamed
            # while it was copied (Spark writes each log entry as .<name>.<uuid>.tmp, then
            # renames it): not failures.
            benign = errors and all(missing in x or ".tmp" in x for x in errors)
            if not benign:
                raise self._fail("-copyToLocal", result)
        self._copy = target / name
        return self._copy

    def _local(self, uri: str) -> Path:
        uri = uri.rstrip("/")
        if uri != self.checkpoint and not uri.startswith(self.checkpoint + "/"):
            raise CinestreamError(f"{uri} is not under the checkpoint {self.checkpoint}")
        return self._snapshot() / uri[len(self.checkpoint) :].lstrip("/")

    def list_names(self, directory: str) -> list[str]:
        """Names of the entries of a directory (empty if it does not exist)."""
        path = self._local(directory)
        return [p.name for p in path.iterdir()] if path.is_dir() else []

    def read_text(self, path: str) -> str:
        """A file's text."""
        return self._local(path).read_text()

    def exists(self, path: str) -> bool:
        """True when the path exists."""
        return self._local(path).exists()

    def delete(self, path: str) -> bool:
        """Delete a file on HDFS (and from the local copy)."""
        if not self.exists(path):
            return False
        result = self.run("-rm", "-f", path)
        if result.returncode != 0:
            raise self._fail("-rm", result)
        self._local(path).unlink(missing_ok=True)
        return True

    def delete_tree(self, path: str) -> bool:
        """Delete a directory and everything in it on HDFS; False when there was none."""
        result = self.run("-rm", "-r", "-skipTrash", path)
        if result.returncode != 0:
            if "No such file or directory" in result.stderr:
                return False
            raise self._fail("-rm -r", result)
        if self._copy is not None:
            target = self._local(path)
            if target.is_dir():
                shutil.rmtree(target)
        return True


@contextlib.contextmanager
def checkpoint_fs(checkpoint: str) -> Iterator[LocalFS | ShellFS | HadoopFS]:
    """The storage of ``checkpoint`` for a command without a SparkSession: :class:`LocalFS` for
    ``file://``, :class:`ShellFS` (Hadoop's shell) for ``hdfs://``, else Hadoop's FileSystem in
    a py4j gateway JVM of pyspark's (its Hadoop client jars), stopped on exit. An ``hdfs://``
    NameNode that does not answer is one line naming the URI and the fix, before any JVM."""
    if is_local(checkpoint):
        yield LocalFS()
        return
    check_reachable(checkpoint)
    if urlsplit(checkpoint).scheme == "hdfs":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="cinestream-checkpoint-") as workdir:
            yield ShellFS(checkpoint, Path(workdir))
        return
    from pyspark.java_gateway import launch_gateway

    gateway = launch_gateway(
        popen_kwargs={"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    )
    try:
        conf = gateway.jvm.org.apache.hadoop.conf.Configuration()
        # A storage that stops answering fails the command in seconds, not after the client's
        # default ten connection retries per call.
        conf.set("ipc.client.connect.max.retries", "2")
        conf.set("ipc.client.connect.retry.interval", "500")
        yield HadoopFS(jvm=gateway.jvm, conf=conf)
    finally:
        proc = getattr(gateway, "proc", None)
        with contextlib.suppress(Exception):
            gateway.shutdown()
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()  # the gateway JVM exits when its stdin closes
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def delete_checkpoint(checkpoint: str) -> bool:
    """Delete a checkpoint wherever it is (``file://``, ``hdfs://``, any Hadoop URI); False when
    there was none."""
    with checkpoint_fs(checkpoint) as fs:
        return fs.delete_tree(checkpoint)
