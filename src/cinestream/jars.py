"""The jars cinestream runs on, resolved once from Maven Central with the poms in ``infra/``:
the Kafka broker (local stack), Spark's Kafka connector (every spark-submit, here or on a
cluster) and HDFS (the cluster profile's checkpoint storage). They live in
``.venv/share/cinestream/jars``."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

from cinestream.errors import CinestreamError
from cinestream.settings import REPO_ROOT

log = logging.getLogger(__name__)

INFRA_DIR = REPO_ROOT / "infra"
JARS_DIR = Path(sys.prefix) / "share" / "cinestream" / "jars"


def jars(kind: str) -> list[Path]:
    """Resolve (once) and return the jars of ``kind``: ``kafka`` (the broker), ``spark`` (the
    Kafka connector) or ``hadoop`` (the HDFS NameNode, DataNode and shell)."""
    target = JARS_DIR / kind
    marker = target / ".complete"
    if not marker.exists():
        pom = INFRA_DIR / kind / "pom.xml"
        if not pom.exists():
            raise CinestreamError(f"{pom} is missing: run from a cinestream checkout")
        if shutil.which("mvn") is None:
            raise CinestreamError(
                "Maven (mvn) is needed to resolve the jars: apt-get install maven"
            )
        log.info("resolving %s jars from Maven Central into %s", kind, target)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        cmd = [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={target}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise CinestreamError(f"mvn could not resolve {pom}: {' | '.join(tail)}")
        marker.touch()
    return sorted(target.glob("*.jar"))
