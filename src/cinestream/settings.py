"""The one configuration object of cinestream: every ``CINESTREAM_*`` environment variable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cinestream.kafka import client_config
from cinestream.kafka.client_config import SASL_LOGIN_MODULES
from cinestream.local.secrets import local_db_password
from cinestream.net import redact_url
from cinestream.windows import WindowSpec, parse_window_type

# The repository root when cinestream runs from a checkout (src layout); the local stack keeps
# its state beside the code so that `make down && rm -rf .state` is a full reset.
REPO_ROOT = Path(__file__).resolve().parents[2]


def _default_state_dir() -> Path:
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / ".state"
    return Path.home() / ".local" / "state" / "cinestream"


# The cluster profile's checkpoint on its HDFS, and where its NameNode listens by default.
HDFS_CHECKPOINT_PATH = "/cinestream/checkpoints/ratings_stream_processor"
HDFS_PORT_BELOW_KAFKA = 1072


class Settings(BaseSettings):
    """Configuration read from ``CINESTREAM_*``; with nothing set it targets the local stack."""

    model_config = SettingsConfigDict(env_prefix="CINESTREAM_", extra="ignore")

    state_dir: Path = Field(default_factory=_default_state_dir)

    # "single": one Kafka broker and Spark inside the driver (local[2]). "cluster": three KRaft
    # brokers with SASL/SCRAM-SHA-512 and replication 3, a Spark standalone master with two
    # workers. Empty: what `cinestream up` recorded in the state dir (single if nothing).
    profile: str = ""

    kafka_bootstrap: str = "127.0.0.1:9092"
    # How clients reach Kafka. Empty protocol: PLAINTEXT (single) or SASL_PLAINTEXT (cluster).
    # Empty user name and password with the local cluster: the credentials `up` generated.
    kafka_security_protocol: str = ""
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    # Which principal this process connects as when no user name is set (kafka/acls.py: admin,
    # generator, processor, reader, auditor); entry points pick theirs with for_kafka_role.
    kafka_role: str = "admin"
    # User -> password of the role principals (JSON), for a cluster whose passwords are not in
    # the state dir (compose); each process is given only the ones of the roles it runs.
    kafka_sasl_passwords: dict[str, str] = {}
    # A PEM file of the CA that signed the brokers' certificates (SASL_SSL / SSL).
    kafka_ssl_ca_location: str = ""
    ratings_topic: str = "ratings"
    metrics_topic: str = "metrics"
    dlq_topic: str = "ratings_dlq"
    ratings_partitions: int = Field(default=3, ge=1)
    dlq_partitions: int = Field(default=1, ge=1)
    metrics_partitions: int = Field(default=1, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # min.insync.replicas of every topic; 0: 2 with three or more replicas, else 1.
    min_insync_replicas: int = Field(default=0, ge=0)

    # Empty means "the local stack's database", whose password `make up` generates.
    database_url: str = ""
    # The API's read-only connection; empty means the local stack's reader role (or database_url).
    api_database_url: str = ""
    pg_port: int = 5432
    # Airflow's metadata database; empty means a separate database in the local server.
    airflow_database_url: str = ""

    # The processor's (and the backfill's) checkpoint: any Hadoop URI (file://, hdfs://, s3a://).
    # Empty: file://<state dir>/checkpoints/... (single profile) or, in the cluster profile, the
    # local HDFS the stack starts (hdfs://127.0.0.1:<hdfs_port>/cinestream/checkpoints/...).
    checkpoint_dir: str = ""
    # The cluster profile's NameNode RPC port (its UI and the DataNode on the next four ports);
    # 0: the first Kafka port - 1072 (8020 beside 9092).
    hdfs_port: int = Field(default=0, ge=0, le=65530)
    # Replicas per block of the checkpoint files the Spark jobs write on HDFS; 0: 1 on the
    # cluster profile's own HDFS (one DataNode), else the file system's default.
    hdfs_replication: int = Field(default=0, ge=0)

    # Event-time windows: tumbling_<size> or sliding_<size>_<slide>; the first is the default.
    window_types: Annotated[list[str], NoDecode] = ["tumbling_1min"]
    # How far behind the newest event time a window stays open for late records.
    allowed_lateness_s: int = Field(default=120, ge=0)
    # Events further ahead of the wall clock than this do not move the watermark, so one bad
    # clock cannot close every open window at once.
    future_tolerance_s: int = Field(default=300, ge=0)

    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int = Field(default=500_000, ge=1)
    # The most records one Spark task reads from Kafka (maxRecordsPerPartition); 0: a full batch
    # spread over twice the cores Spark has.
    kafka_max_records_per_task: int = Field(default=0, ge=0)
    # The most window cells one micro-batch may hand to the driver: a rating makes up to one cell
    # per window containing it, so batches are capped at MAX_BATCH_CELLS / windows per rating
    # ratings. This, not what a batch contains, bounds the driver's memory (about 100 bytes a cell
    # on the driver: 2,000,000 fit the default 2g with room to spare).
    max_batch_cells: int = Field(default=2_000_000, ge=1_000)
    # Micro-batch interval of the continuous processor (the duration grammar of timeparse). 1s
    # keeps a new rating's p99 time to the API under 2 s on a 2-core machine
    # (bench/bench_freshness.py) at the price of most of one core; 10s costs a fifth of one.
    trigger_interval: str = "1s"
    shuffle_partitions: int = Field(default=2, ge=1)
    spark_master: str = "local[2]"
    # spark.cores.max of each job (0: no cap). The cluster profile caps jobs at one core so the
    # continuous processor and a backfill can run side by side on the two one-core workers.
    spark_cores_max: int = Field(default=0, ge=0)
    spark_driver_memory: str = "2g"
    # The spark-submit the CLI launches its jobs with (empty: this venv's pyspark). Another one
    # takes the same arguments: a Spark distribution's own, or the tests' warm driver
    # (tests/warm_driver.py), which runs a job whose submit options match its own in one
    # long-lived driver.
    spark_submit: str = ""
    # Extra JVM options of the Kafka brokers, HDFS daemons and Spark master and workers the local
    # stacks start (the test stacks run them with C1 only, -XX:TieredStopAtLevel=1:
    # tests/conftest.py says why).
    daemon_jvm_opts: str = ""
    # How long a micro-batch keeps retrying a database that is down before the query fails.
    db_retry_timeout_s: int = Field(default=300, ge=0)

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    dashboard_port: int = 8501
    dashboard_host: str = "127.0.0.1"
    airflow_port: int = 8080

    # How long per-window detail (histograms, per-movie counts, window state, batch records) and
    # the local stack's logs are kept; window_metrics is kept for good. Also the API's longest
    # top-movies range and what `cinestream validate` checks when given no range.
    retention: str = "3d"

    # The live platform under Airflow. cinestream_generate produces LIVE_RATE ratings/s (0: the
    # live generator is off); cinestream_stream's runs stop after STREAM_RUN_DURATION and the
    # next one resumes from the checkpoint; cinestream_backfill catches up BACKFILL_CATCHUP
    # hours back from the stack's first start, reading records stamped from BACKFILL_MARGIN
    # before its hour (the generator stamps records with their event time).
    live_rate: float = Field(default=20.0, ge=0)
    stream_run_duration: str = "1h"
    backfill_catchup: str = "3h"
    backfill_margin: str = "15min"
    # The first start of the stack (ISO-8601); empty: recorded in the state dir on first use.
    first_start: str = ""

    # Share of ratings that may go to the DLQ before the quality checks fail.
    max_dlq_share: float = Field(default=0.01, ge=0, le=1)
    # Share of the traffic (valid + invalid records) that may be invalid in one cinestream_dlq
    # report before the platform is marked degraded (/metrics/health, the dashboard).
    dlq_degraded_share: float = Field(default=0.05, ge=0, le=1)
    # The Airflow task process that started this processor (its operator sets it): the processor
    # stops between batches when that process is gone.
    supervisor_pid: str = ""
    # Where the Data Docs' scripts and styles are; empty: where `make install` put them.
    docs_assets: str = ""

    @field_validator("window_types", mode="before")
    @classmethod
    def _split_window_types(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("window_types")
    @classmethod
    def _check_window_types(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one window type is needed, e.g. tumbling_1min")
        specs = [parse_window_type(name) for name in value]
        if specs[0].size_ms != specs[0].slide_ms:
            raise ValueError(
                f"the first window type is the primary one and must be tumbling, got {value[0]}"
            )
        return value

    @field_validator(
        "trigger_interval", "stream_run_duration", "backfill_catchup", "backfill_margin"
    )
    @classmethod
    def _check_durations(cls, value: str) -> str:
        from cinestream.timeparse import parse_duration_ms

        parse_duration_ms(value)
        return value

    @field_validator("daemon_jvm_opts")
    @classmethod
    def _check_jvm_opts(cls, value: str) -> str:
        import shlex

        shlex.split(value)  # unbalanced quotes: one line at start-up, not a traceback at `up`
        return value

    @property
    def daemon_jvm_args(self) -> list[str]:
        """CINESTREAM_DAEMON_JVM_OPTS as arguments."""
        import shlex

        return shlex.split(self.daemon_jvm_opts)

    @field_validator("retention")
    @classmethod
    def _check_retention(cls, value: str) -> str:
        from cinestream.timeparse import parse_duration_ms

        if parse_duration_ms(value) < 3_600_000:
            raise ValueError("must be at least 1h, e.g. 3d")
        return value

    @property
    def retention_ms(self) -> int:
        """CINESTREAM_RETENTION in milliseconds."""
        from cinestream.timeparse import parse_duration_ms

        return parse_duration_ms(self.retention)

    @field_validator("state_dir", mode="before")
    @classmethod
    def _check_state_dir(cls, value: object) -> object:
        # An empty CINESTREAM_STATE_DIR would otherwise mean the current directory.
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: unset CINESTREAM_STATE_DIR to use .state, or name a path")
        return value

    @field_validator("starting_offsets")
    @classmethod
    def _check_starting_offsets(cls, value: str) -> str:
        if value not in ("earliest", "latest") and not value.startswith("{"):
            raise ValueError("must be earliest, latest or a JSON offsets object")
        return value

    @field_validator("kafka_security_protocol")
    @classmethod
    def _check_security_protocol(cls, value: str) -> str:
        value = value.strip().upper()
        if value and value not in SECURITY_PROTOCOLS:
            raise ValueError(f"must be one of {', '.join(SECURITY_PROTOCOLS)}")
        return value

    @field_validator("kafka_role")
    @classmethod
    def _check_kafka_role(cls, value: str) -> str:
        from cinestream.kafka.acls import ROLES

        if value not in ROLES:
            raise ValueError(f"must be one of {', '.join(ROLES)}")
        return value

    @field_validator("kafka_sasl_mechanism")
    @classmethod
    def _check_sasl_mechanism(cls, value: str) -> str:
        value = value.strip().upper()
        if value not in SASL_LOGIN_MODULES:
            raise ValueError(f"must be one of {', '.join(SASL_LOGIN_MODULES)}")
        return value

    @model_validator(mode="after")
    def _fill_local_defaults(self) -> Settings:
        self.state_dir = self.state_dir.expanduser().resolve()
        if not self.profile:
            recorded = self.state_dir / "profile"
            self.profile = recorded.read_text().strip() if recorded.exists() else "single"
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.profile == "cluster":
            self._fill_cluster_defaults()
        if not self.checkpoint_dir and self.cluster:
            self.checkpoint_dir = f"{self.local_hdfs_url}{HDFS_CHECKPOINT_PATH}"
        if not self.checkpoint_dir:
            path = self.state_dir / "checkpoints" / "ratings_stream_processor"
            self.checkpoint_dir = path.as_uri()
        return self

    def _fill_cluster_defaults(self) -> None:
        explicit = self.model_fields_set
        hosts = [h.strip() for h in self.kafka_bootstrap.split(",") if h.strip()]
        if len(hosts) == 1 and hosts[0].startswith(LOCAL_HOSTS):
            # One local address names the first of the profile's three brokers.
            host, _, port = hosts[0].rpartition(":")
            self.kafka_bootstrap = ",".join(f"{host}:{int(port) + i}" for i in range(3))
        if "replication_factor" not in explicit:
            self.replication_factor = 3
        if "spark_master" not in explicit:
            self.spark_master = "spark://127.0.0.1:7077"
        if "spark_cores_max" not in explicit:
            self.spark_cores_max = 1
        if not self.kafka_security_protocol:
            self.kafka_security_protocol = "SASL_PLAINTEXT"

    # ----------------------------------------------------------------------------------------
    @property
    def cluster(self) -> bool:
        """True in the cluster profile."""
        return self.profile == "cluster"

    @property
    def resolved_hdfs_port(self) -> int:
        """The local NameNode's RPC port: CINESTREAM_HDFS_PORT, else the first Kafka port - 1072."""
        if self.hdfs_port:
            return self.hdfs_port
        port = int(self.kafka_hosts[0].rpartition(":")[2] or 9092) - HDFS_PORT_BELOW_KAFKA
        return port if 1024 < port < 65530 else 8020

    @property
    def local_hdfs_url(self) -> str:
        """``hdfs://127.0.0.1:<port>``: the HDFS the cluster profile starts."""
        return f"hdfs://127.0.0.1:{self.resolved_hdfs_port}"

    @property
    def uses_local_hdfs(self) -> bool:
        """True in the cluster profile when the checkpoint is on the HDFS the stack starts."""
        return self.cluster and self.checkpoint_dir.startswith(self.local_hdfs_url + "/")

    @property
    def kafka_hosts(self) -> list[str]:
        """The bootstrap servers as a list of ``host:port``."""
        return [h.strip() for h in self.kafka_bootstrap.split(",") if h.strip()]

    @property
    def uses_local_kafka(self) -> bool:
        """True when every bootstrap server is on this machine (the stack starts the brokers)."""
        return all(h.startswith(LOCAL_HOSTS) for h in self.kafka_hosts)

    @property
    def uses_local_spark_cluster(self) -> bool:
        """True when the Spark master is a standalone master on this machine."""
        return self.spark_master.startswith(tuple(f"spark://{h}" for h in LOCAL_HOSTS))

    @property
    def resolved_min_insync_replicas(self) -> int:
        """min.insync.replicas of the topics: configured, else 2 with 3+ replicas, else 1."""
        if self.min_insync_replicas:
            return self.min_insync_replicas
        return 2 if self.replication_factor >= 3 else 1

    @property
    def resolved_kafka_security_protocol(self) -> str:
        """security.protocol of every Kafka client."""
        return self.kafka_security_protocol or "PLAINTEXT"

    @property
    def kafka_uses_sasl(self) -> bool:
        """True when clients authenticate with SASL."""
        return self.resolved_kafka_security_protocol.startswith("SASL")

    @property
    def resolved_kafka_sasl_username(self) -> str:
        """The clients' SASL user: configured, else the principal of CINESTREAM_KAFKA_ROLE."""
        from cinestream.kafka.acls import principal_user

        return self.kafka_sasl_username or principal_user(self.kafka_role)

    def for_kafka_role(self, role: str) -> Settings:
        """These settings connecting to Kafka as ``role``'s principal (kafka/acls.py)."""
        from cinestream.kafka.acls import principal_user

        principal_user(role)  # an unknown role fails here, not at the first connection
        return self.model_copy(update={"kafka_role": role})

    @property
    def kafka_description(self) -> str:
        """The bootstrap servers and, unless PLAINTEXT, how clients authenticate (for logs)."""
        protocol = self.resolved_kafka_security_protocol
        if protocol == "PLAINTEXT":
            return self.kafka_bootstrap
        user = self.resolved_kafka_sasl_username or "?"
        how = f", {self.kafka_sasl_mechanism} as {user}" if self.kafka_uses_sasl else ""
        return f"{self.kafka_bootstrap} ({protocol}{how})"

    def kafka_sasl_credentials(self) -> tuple[str, str]:
        """(user, password) of the clients: configured, else the local cluster's generated ones."""
        return client_config.sasl_credentials(self)

    @property
    def kafka_client_config(self) -> dict[str, str]:
        """The librdkafka settings any client needs to connect (``cinestream status --json``)."""
        return client_config.librdkafka(self)

    @property
    def spark_kafka_options(self) -> dict[str, str]:
        """The same connection as the Spark Kafka connector's ``kafka.``-prefixed options."""
        return client_config.spark_options(self)

    @property
    def windows(self) -> list[WindowSpec]:
        """The configured window types, parsed."""
        return [parse_window_type(name) for name in self.window_types]

    @property
    def cells_per_rating(self) -> int:
        """Window cells one rating can make: one per window of every type that contains it."""
        return sum(w.windows_per_event for w in self.windows)

    @property
    def batch_ratings_limit(self) -> int:
        """Ratings per micro-batch: MAX_OFFSETS_PER_TRIGGER, lowered so that a batch never
        makes more than MAX_BATCH_CELLS cells."""
        return min(self.max_offsets_per_trigger, self.cells_bound)

    @property
    def cells_bound(self) -> int:
        """The most ratings a micro-batch may hold so that it makes at most MAX_BATCH_CELLS cells
        (the driver's memory)."""
        return max(1, self.max_batch_cells // self.cells_per_rating)

    def spark_max_offsets_per_trigger(self, partitions: int) -> int:
        """The ``maxOffsetsPerTrigger`` given to Spark for a topic of ``partitions``.

        Spark shares it among the partitions in proportion to their lag and rounds each share
        down, so a batch may fall up to one record per partition short, and a backlog of
        exactly N limits left a batch of a few records at the end. Adding ``partitions - 1``
        makes every batch of a backlog take at least MAX_OFFSETS_PER_TRIGGER ratings; never past
        the MAX_BATCH_CELLS bound on the driver's memory."""
        return min(self.batch_ratings_limit + max(0, partitions - 1), self.cells_bound)

    @property
    def uses_local_database(self) -> bool:
        """True when no CINESTREAM_DATABASE_URL is set (the local stack's database)."""
        return not self.database_url

    @property
    def resolved_database_url(self) -> str:
        """The libpq URL, generating the local stack's credentials on first use."""
        if self.database_url:
            return self.database_url
        password = local_db_password(self.state_dir)
        return f"postgresql://cinestream:{quote(password)}@127.0.0.1:{self.pg_port}/cinestream"

    @property
    def resolved_api_database_url(self) -> str:
        """The API's read-only libpq URL (the local reader role unless configured)."""
        if self.api_database_url:
            return self.api_database_url
        if self.database_url:
            return self.database_url
        password = local_db_password(self.state_dir, role="cinestream_reader")
        return (
            f"postgresql://cinestream_reader:{quote(password)}@127.0.0.1:{self.pg_port}/cinestream"
        )

    @property
    def run_dir(self) -> Path:
        """Pid and stop files of the local stack."""
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        """Log files of the local stack's processes."""
        return self.state_dir / "logs"

    @property
    def api_url(self) -> str:
        """Base URL of the metrics API."""
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def dashboard_url(self) -> str:
        """URL of the dashboard."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def airflow_url(self) -> str:
        """URL of the Airflow UI and REST API."""
        return f"http://127.0.0.1:{self.airflow_port}"

    def redacted_database_url(self) -> str:
        """The database URL with its password replaced by ``***`` (for logs)."""
        return redact_url(self.resolved_database_url)


PROFILES = ("single", "cluster")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")
LOCAL_HOSTS = ("127.0.0.1:", "localhost:")


def airflow_context() -> dict[str, str]:
    """The Airflow task running this process, as its operator exports it (``AIRFLOW_CTX_*``;
    empty outside Airflow)."""
    return {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CTX_")}
