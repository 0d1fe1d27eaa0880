"""The cluster profile's HDFS: one NameNode and one DataNode from Apache Hadoop's jars (Maven
Central, ``infra/hadoop/pom.xml``), plain Java processes on the loopback address, storage under
``<state dir>/hdfs``. It holds the processor's and the backfill's checkpoints
(``hdfs://127.0.0.1:<port>/cinestream/checkpoints/...``), as the seed system kept them.

Ports are derived from the NameNode's RPC port (``Settings.hdfs_port``, by default the first
Kafka port - 1072: 8020 beside Kafka's 9092): its web UI (and WebHDFS) on + 1, the DataNode's
data transfer on + 2, web UI on + 3 and IPC on + 4.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx

from cinestream.errors import CinestreamError
from cinestream.jars import jars
from cinestream.local.processes import ManagedProcess, wait_until
from cinestream.local.secrets import private_dir
from cinestream.net import port_open
from cinestream.settings import Settings

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
NAMENODE_MAIN = "org.apache.hadoop.hdfs.server.namenode.NameNode"
DATANODE_MAIN = "org.apache.hadoop.hdfs.server.datanode.DataNode"
# The NameNode's cluster id, written by the first format (any DataNode it meets must share it).
CLUSTER_ID = "cinestream"
# A DataNode the NameNode heard from this many seconds ago at most is taken as up.
HEARD_S = 5

LOG4J = "\n".join(
    [
        "log4j.rootLogger=INFO,console",
        "log4j.appender.console=org.apache.log4j.ConsoleAppender",
        "log4j.appender.console.target=System.err",
        "log4j.appender.console.layout=org.apache.log4j.PatternLayout",
        "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %-5p %c{1}: %m%n",
        # Every RPC's audit line and the block-level chatter: WARN and up only.
        "log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit=WARN",
        "log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN",
        "log4j.logger.org.apache.hadoop.hdfs.server.datanode.DataNode.clienttrace=WARN",
        "log4j.logger.BlockStateChange=WARN",
        "log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR",
        "",
    ]
)


INDEX_HTML = """<!doctype html>
<title>cinestream HDFS NameNode</title>
<h1>HDFS NameNode (cinestream cluster profile)</h1>
<ul>
<li><a href="jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState">file system state</a></li>
<li><a href="jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo">NameNode info</a></li>
<li><a href="webhdfs/v1/cinestream/checkpoints?op=LISTSTATUS">checkpoints (WebHDFS)</a></li>
<li><a href="jmx">all JMX beans</a></li>
</ul>
"""


@dataclass(frozen=True)
class HdfsDaemon:
    """The NameNode or the DataNode: its process name, main class and web UI port."""

    name: str
    main: str
    ui_port: int


class LocalHDFS:
    """The NameNode and the DataNode, each a ManagedProcess; config and storage under
    ``<state dir>/hdfs`` (owner-only, like the rest of the state dir)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.state_dir / "hdfs"
        self.port = settings.resolved_hdfs_port
        self.namenode = HdfsDaemon("hdfs-namenode", NAMENODE_MAIN, self.port + 1)
        self.datanode = HdfsDaemon("hdfs-datanode", DATANODE_MAIN, self.port + 3)
        self._http: httpx.Client | None = None

    @property
    def daemons(self) -> list[HdfsDaemon]:
        """NameNode first, then the DataNode."""
        return [self.namenode, self.datanode]

    @property
    def url(self) -> str:
        """``hdfs://127.0.0.1:<port>``: the file system's URI."""
        return f"hdfs://{HOST}:{self.port}"

    def ui_url(self, daemon: HdfsDaemon) -> str:
        """A daemon's web UI."""
        return f"http://{HOST}:{daemon.ui_port}"

    @property
    def conf_dir(self) -> Path:
        """Where core-site.xml, hdfs-site.xml and log4j.properties are written."""
        return self.root / "conf"

    def process(self, daemon: HdfsDaemon) -> ManagedProcess:
        """A daemon's background process (pid file, log file)."""
        return ManagedProcess(daemon.name, self.settings)

    def site(self) -> dict[str, dict[str, str]]:
        """The properties of core-site.xml and hdfs-site.xml."""
        p = self.port
        return {
            "core-site.xml": {
                "fs.defaultFS": self.url,
                "hadoop.tmp.dir": str(self.root / "tmp"),
            },
            "hdfs-site.xml": {
                "dfs.namenode.name.dir": (self.root / "name").as_uri(),
                "dfs.datanode.data.dir": (self.root / "data").as_uri(),
                "dfs.namenode.rpc-address": f"{HOST}:{p}",
                "dfs.namenode.rpc-bind-host": HOST,
                "dfs.namenode.http-address": f"{HOST}:{p + 1}",
                "dfs.namenode.http-bind-host": HOST,
                "dfs.namenode.servicerpc-bind-host": HOST,
                "dfs.datanode.address": f"{HOST}:{p + 2}",
                "dfs.datanode.http.address": f"{HOST}:{p + 3}",
                "dfs.datanode.ipc.address": f"{HOST}:{p + 4}",
                # Registered under the address it listens on (not the machine's host name).
                "dfs.datanode.hostname": HOST,
                # No secondary NameNode runs; keep its default port (9868, 0.0.0.0) unused.
                "dfs.namenode.secondary.http-address": f"{HOST}:0",
                # One DataNode: one replica of each block.
                "dfs.replication": "1",
                # Out of safe mode as soon as the DataNode has reported its blocks (the default
                # waits 30 s more after a restart).
                "dfs.namenode.safemode.extension": "0",
                "dfs.namenode.datanode.registration.ip-hostname-check": "false",
                # The data directory is the state dir's (0700); the DataNode's default check
                # wants exactly this.
                "dfs.datanode.data.dir.perm": "700",
                # A DataNode that stopped answering is declared dead after 2 x 15 s + 10 x 3 s
                # instead of 10.5 min: the NameNode stops handing it out to writers sooner.
                "dfs.namenode.heartbeat.recheck-interval": "15000",
            },
        }

    def _write_config(self) -> None:
        private_dir(self.root)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for name, props in self.site().items():
            body = "".join(
                f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n"
                for k, v in props.items()
            )
            text = (
                '<?xml version="1.0"?>\n<!-- Generated by cinestream (cluster profile). -->\n'
                f"<configuration>\n{body}</configuration>\n"
            )
            (self.conf_dir / name).write_text(text)
        (self.conf_dir / "log4j.properties").write_text(LOG4J)
        # The daemons' web servers look their web apps up on the class path; Maven's jars do not
        # ship the distribution's HTML pages, so each gets a page of links to what they serve
        # (JMX, WebHDFS, logs).
        for app in ("hdfs", "datanode", "static"):
            (self.conf_dir / "webapps" / app).mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "webapps" / "hdfs" / "index.html").write_text(INDEX_HTML)

    def java(self, main: str, *args: str, heap: str = "512m") -> list[str]:
        """``java`` of a Hadoop main class with the conf dir and the HDFS jars."""
        classpath = ":".join([str(self.conf_dir), *(str(j) for j in jars("hadoop"))])
        return [
            "java",
            f"-Xmx{heap}",
            "-XX:+UseSerialGC",
            *self.settings.daemon_jvm_args,
            # Hadoop's native-library probe and the JDK 17 module checks, quiet.
            "--add-opens=java.base/java.lang=ALL-UNNAMED",
            f"-Dhadoop.log.dir={self.settings.log_dir}",
            f"-Dhadoop.home.dir={self.root}",
            "-cp",
            classpath,
            main,
            *args,
        ]

    def _format(self) -> None:
        """Format the NameNode's storage once (on the first start)."""
        if (self.root / "name" / "current" / "VERSION").exists():
            return
        log.info("formatting the HDFS NameNode's storage in %s", self.root / "name")
        result = subprocess.run(
            self.java(NAMENODE_MAIN, "-format", "-nonInteractive", "-clusterId", CLUSTER_ID),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-3:])
            raise CinestreamError(f"formatting HDFS in {self.root / 'name'} failed: {tail}")

    def start_daemon(self, daemon: HdfsDaemon) -> None:
        """Start the NameNode or the DataNode (no wait; config written, storage formatted once)."""
        proc = self.process(daemon)
        if proc.pid() is not None:
            return
        ports = [self.port, self.port + 1] if daemon is self.namenode else [self.port + 2]
        ports += [self.port + 3, self.port + 4] if daemon is self.datanode else []
        for port in ports:
            if port_open(HOST, port):
                raise CinestreamError(
                    f"port {port} ({daemon.name}) is already taken by another process; stop it "
                    "or set CINESTREAM_HDFS_PORT to a free range of five ports"
                )
        self._write_config()
        if daemon is self.namenode:
            self._format()
        pid = proc.start(self.java(daemon.main), cwd=self.root)
        log.info(
            "starting %s (pid %d), web UI %s, log %s",
            daemon.name,
            pid,
            self.ui_url(daemon),
            proc.log_file,
        )

    def launch(self) -> None:
        """Start both daemons without waiting (the DataNode retries until the NameNode is up)."""
        for daemon in self.daemons:
            self.start_daemon(daemon)

    def jmx(self, daemon: HdfsDaemon, bean: str) -> dict[str, Any]:
        """One bean of a daemon's JMX servlet; empty when it does not answer."""
        if self._http is None:
            # One kept-alive connection for every poll (a new one each time would churn through
            # ephemeral ports, among them the ones the daemons are about to bind).
            self._http = httpx.Client(timeout=3)
        try:
            answer = self._http.get(f"{self.ui_url(daemon)}/jmx", params={"qry": bean}).json()
        except (httpx.HTTPError, ValueError):
            return {}
        beans = answer.get("beans") or [{}]
        return dict(beans[0])

    def state(self) -> dict[str, Any]:
        """Live DataNodes and the safe-mode flag as the NameNode reports them (empty when it
        does not answer)."""
        fs = self.jmx(self.namenode, "Hadoop:service=NameNode,name=FSNamesystemState")
        if not fs:
            return {}
        info = self.jmx(self.namenode, "Hadoop:service=NameNode,name=NameNodeInfo")
        try:
            nodes = json.loads(info.get("LiveNodes") or "{}")
        except ValueError:
            nodes = {}
        return {
            "live_datanodes": int(fs.get("NumLiveDataNodes", 0)),
            # DataNodes heard from in the last few seconds (one heartbeat every 3 s): the
            # NameNode counts a DataNode that was killed as live for a minute more.
            "heard_datanodes": sum(
                1 for n in nodes.values() if int(n.get("lastContact", 99)) <= HEARD_S
            ),
            "state": fs.get("FSState", "?"),
            "safemode": bool(info.get("Safemode")),
        }

    def ready(self) -> bool:
        """True when the NameNode answers, is out of safe mode and has just heard from its
        DataNode."""
        state = self.state()
        return bool(state) and state["heard_datanodes"] >= 1 and not state["safemode"]

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Wait until writes can succeed: the NameNode out of safe mode with its DataNode."""

        rebinds = {d.name: 0 for d in self.daemons}

        def up() -> bool:
            for daemon in self.daemons:
                proc = self.process(daemon)
                pid = proc.pid()
                if pid is not None:  # reap it if it exited as our child (else a zombie runs)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                if proc.pid() is not None:
                    continue
                text = proc.log_file.read_text(errors="replace")
                tail = text[text.rfind("STARTUP_MSG: Starting") :]
                if "Address already in use" in tail and rebinds[daemon.name] < 2:
                    # Its port was free when checked but taken at bind time (the test stacks'
                    # ports lie in the ephemeral range, where any client connection can hold
                    # one for a moment): start it again.
                    rebinds[daemon.name] += 1
                    log.warning("%s could not bind its port; starting it again", daemon.name)
                    self.start_daemon(daemon)
                    continue
                errors = [x for x in tail.splitlines() if " ERROR " in x or "Exception" in x]
                raise CinestreamError(
                    f"{daemon.name} exited; see {proc.log_file}: "
                    + (errors[:1] or tail.splitlines()[-1:] or ["(empty log)"])[0][-400:]
                )
            return self.ready()

        log_file = self.process(self.datanode).log_file
        wait_until(up, "HDFS (NameNode and DataNode)", timeout_s, log_file)

    def start(self) -> None:
        """Start both daemons and wait until HDFS takes writes."""
        self.launch()
        self.wait_ready()
        log.info("HDFS %s (NameNode UI %s)", self.url, self.ui_url(self.namenode))

    def kill(self, name: str) -> int:
        """``kill -9`` one daemon (the fault tests); returns its pid."""
        daemon = next((d for d in self.daemons if d.name == name), None)
        if daemon is None:
            raise CinestreamError(f"no HDFS daemon {name!r}; daemons: {self.names()}")
        return self.process(daemon).kill()

    def names(self) -> list[str]:
        """The daemons' process names."""
        return [d.name for d in self.daemons]

    def running(self) -> dict[str, bool]:
        """Per daemon, whether its process runs."""
        return {d.name: self.process(d).pid() is not None for d in self.daemons}

    def stop(self) -> dict[str, bool]:
        """Stop the DataNode, then the NameNode (SIGTERM: each closes its storage cleanly in a
        second or two; the NameNode's edit log is synced on every change anyway)."""
        return {d.name: self.process(d).stop(timeout_s=20) for d in reversed(self.daemons)}
