"""The one typed settings object of nrtrec.

Every knob comes from here, read from environment variables prefixed ``NRTREC_``; nested
groups use ``__`` (``NRTREC_KAFKA__PORT=19092``). Services receive a ``Settings`` instance
(dependency injection) instead of reading globals, so tests run a second stack on other ports
next to a developer's own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from nrtrec.schemas.filters import FilterLimits
from nrtrec.schemas.partitioning import ShardMap
from nrtrec.schemas.query_api import Backend, Quantization
from nrtrec.schemas.topics import Topic
from nrtrec.schemas.types import Label

LOOPBACK = "127.0.0.1"

SETTINGS_FILE_ENV = "NRTREC_SETTINGS_FILE"
"""A child process of the local runner finds its whole ``Settings`` in the JSON file this names."""


class KafkaSettings(BaseModel):
    host: str = LOOPBACK
    port: int = 9092
    controller_port: int = 9093
    # Broker jars come from Maven Central; 4.x is KRaft-only, which is what we want.
    version: str = "4.3.1"
    scala_version: str = "2.13"
    # Kafka's POM brings log4j-core but no SLF4J binding; match the log4j it was built with.
    log4j_version: str = "2.25.4"
    heap: str = "1g"
    partitions: int = 4
    # The local runner's cluster: this many KRaft nodes, each a broker and a controller voter.
    # Node i listens on port + 2i and its controller on controller_port + 2i, so the default
    # ports (9092, 9093) interleave without colliding. Every client bootstraps from all of them:
    # a client started while one is down still finds the cluster.
    brokers: int = Field(default=1, ge=1, le=9)

    @property
    def broker_ports(self) -> list[int]:
        return [self.port + 2 * i for i in range(self.brokers)]

    @property
    def controller_ports(self) -> list[int]:
        return [self.controller_port + 2 * i for i in range(self.brokers)]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{port}" for port in self.broker_ports)

    @property
    def replication_factor(self) -> int:
        """Copies of each partition of our topics: three once the cluster has three brokers."""
        return min(3, self.brokers)

    @property
    def min_insync_replicas(self) -> int:
        """Copies an ``acks=all`` write waits for: all but one, so one broker may be away and
        nothing acknowledged lives on a single disk (2 of 3)."""
        return max(1, self.replication_factor - 1)


class TopicSettings(BaseModel):
    """The topic of each contract stream (``schemas.Topic``); a deployment or a test may rename
    them. Every producer and consumer asks here (``settings.topics.of(Topic.CLICKS)``)."""

    clicks: str = Topic.CLICKS.value
    listings: str = Topic.LISTINGS.value
    item_deltas: str = Topic.ITEM_DELTAS.value
    dead_letters: str = Topic.DEAD_LETTERS.value
    index_declarations: str = Topic.INDEX_DECLARATIONS.value
    impressions: str = Topic.IMPRESSIONS.value

    def of(self, topic: Topic) -> str:
        return getattr(self, topic.name.lower())

    def all(self) -> dict[Topic, str]:
        return {topic: self.of(topic) for topic in Topic}


class FlinkSettings(BaseModel):
    host: str = LOOPBACK
    rest_port: int = 8081
    rpc_port: int = 6123
    # The official Kafka connector is released per Flink minor; it must match apache-flink.
    kafka_connector_version: str = "5.0.0-2.2"
    taskmanager_slots: int = Field(default=2, ge=1)
    # The local runner's cluster: this many TaskManagers (flink-taskmanager-0..N in `nrtrec
    # status`) beside the one JobManager; jobs at streaming.parallelism p spread over them, and
    # a job restored at another parallelism has its keyed state split by key group.
    taskmanagers: int = Field(default=1, ge=1, le=8)
    jobmanager_memory: str = "1024m"
    process_memory: str = "1600m"

    @property
    def slots(self) -> int:
        return self.taskmanagers * self.taskmanager_slots

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"


class TritonSettings(BaseModel):
    host: str = LOOPBACK
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    # None means the repository that ships with nrtrec (inference/model_repository).
    model_repository: Path | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"


class RedisSettings(BaseModel):
    host: str = LOOPBACK
    port: int = 6379

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


class CouchbaseSettings(BaseModel):
    # None: the KV address is read from the cluster manager's REST API at host:control_port
    # (``/pools/default/buckets/<bucket>``), as the local runner's CouchbaseMock publishes it.
    connstr: str | None = None
    host: str = LOOPBACK
    # REST port of the cluster manager (CouchbaseMock's locally); the mock picks its KV port.
    control_port: int = 11450
    bucket: str = "default"
    username: str = "Administrator"
    password: str = "password"
    # CouchbaseMock from Maven Central; gocaves is refused by the Go module proxy here.
    mock_version: str = "1.5.27"


class QueryNodeSettings(BaseModel):
    """One query node: where it listens, where it keeps snapshots, and how it searches."""

    host: str = LOOPBACK
    port: int = 8100
    # None means <run_dir>/query-node.
    data_dir: Path | None = None
    # POST /v1/indexes/{name}/load reads snapshots only from below this folder (paths resolved,
    # links followed, so nothing escapes it). None: the bulk backfill's out dir.
    import_root: Path | None = None
    snapshots_keep: int = Field(default=3, ge=1, description="snapshots kept per index version")
    access_log: bool = False

    # Defaults for a new index (PUT /v1/indexes/{name} may override the first three).
    M: int = Field(default=16, ge=2, le=256, description="HNSW out-degree")
    ef_construction: int = Field(default=200, ge=1)
    max_elements: int = Field(default=10_000, ge=1, description="initial capacity; grows")
    growth_factor: float = Field(default=2.0, gt=1.0, description="capacity multiplier when full")
    insert_threads: int = Field(default=-1, description="graph insert threads; -1: all cores")
    # A write holds the index for at most this many items at a time, and searches waiting for
    # it go between two chunks: a search waits for one chunk (~25 ms at 64-d), not a whole
    # batch of 1,000 (~130 ms).
    write_chunk: int = Field(default=200, ge=1, description="items a write inserts at a time")
    # The ANN library of a new index (PUT may choose another) and how its graph holds vectors.
    backend: Backend = Backend.HNSW
    quantization: Quantization = Quantization.NONE
    # A quantized graph returns this many times k candidates, reranked by float32 vectors.
    rescore_factor: float = Field(default=4.0, ge=1.0)

    # Search. ef is the larger of ef_search and ef_per_k * k: on 20k random 32-d vectors
    # (M=16) k=100 needs ef≈200 for recall 0.97, k=10 needs ef≈80 for 0.96.
    ef_search: int = Field(default=128, ge=1)
    ef_per_k: float = Field(default=3.0, ge=1.0)
    max_ef: int = Field(default=4096, ge=1, description="cap on any search's ef")
    max_k: int = Field(default=1000, ge=1)
    max_batch: int = Field(default=10_000, ge=1, description="items per upsert or delete call")
    # A request body past this is refused (413) before it is read: 10,000 items of 64 floats.
    max_body_bytes: int = Field(default=16 * 2**20, ge=1024)
    # A filter holds at most this many conditions, an "in" at most this many values (422).
    max_filter_conditions: int = Field(default=32, ge=1)
    max_filter_values: int = Field(default=256, ge=1)
    # A filtered graph search walks about ef / (matching fraction) nodes and calls back into
    # Python for each, so a tight filter is answered by exact search over the matching items.
    exact_search_max_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    # Beyond those, a cost model: a filtered walk takes about ef / fraction steps, exact search
    # one distance per matching item, and one step costs about this many of those distances
    # (measured on 100k uniform 64-d vectors, hnswlib: ~3.5 us a step, ~0.06 us a distance).
    # Exact search wins while candidates < sqrt(ratio * ef * count): below ~27 % of 100k items
    # at ef 128. 0 turns the model off.
    exact_search_cost_ratio: float = Field(default=50.0, ge=0.0)
    exact_search_max_count: int = Field(default=5_000, ge=0)
    max_graph_steps: int = Field(default=20_000, ge=1, description="graph-walk estimate cap")

    # The `item-deltas` consumer; off by default, so a node alone needs no Kafka. A shard owns
    # `partitions` (assigned explicitly; None: the whole topic, shared with the group); a replica
    # is one more node on the same partitions with another `replica` number, hence its own group.
    consume_deltas: bool = False
    kafka_bootstrap: str | None = Field(default=None, description="None: kafka.bootstrap_servers")
    partitions: list[int] | None = None
    replica: int = Field(default=0, ge=0)
    consumer_group: str | None = Field(
        default=None, description="None: nrtrec-query-node-p<partitions|all>-r<replica>"
    )
    index_name: str = Field(default="items", description="the index that item deltas go to")
    # A partition no restored snapshot covers is replayed from its beginning: the committed
    # offset describes state that died with the previous process. "committed" trusts it.
    resume_without_snapshot: Literal["earliest", "committed"] = "earliest"
    delta_batch: int = Field(default=500, ge=1, le=100_000, description="records per poll")
    delta_poll_s: float = Field(default=0.05, gt=0, le=1.0, description="longest wait per poll")
    # Periodic snapshots (of indexes that changed): a restart replays only what came after.
    snapshot_interval_s: float | None = Field(
        default=30.0, gt=0, description="None: at shutdown and on request only"
    )
    snapshot_every_deltas: int | None = Field(
        default=50_000, ge=1, description="also after this many applied deltas"
    )

    def filter_limits(self) -> FilterLimits:
        return FilterLimits(self.max_filter_conditions, self.max_filter_values)


class GatewaySettings(BaseModel):
    """The gateway that fans searches out over query-node shards (``nrtrec gateway``).

    Callers authenticate with ``Settings.token``; the gateway sends ``upstream_token`` (None:
    ``Settings.token``) to the nodes.
    """

    host: str = LOOPBACK
    port: int = 8090
    # Per shard, the base URLs of its replicas: [["http://127.0.0.1:8100", ...], ...].
    shards: list[list[str]] = Field(default_factory=list)
    # Must equal item-deltas' partition count; None: kafka.partitions.
    num_partitions: int | None = Field(default=None, ge=1)
    # Per shard, the partitions it owns; None: round-robin (shard s owns s, s + n_shards, ...).
    shard_partitions: list[list[int]] | None = None
    upstream_token: str | None = None
    # Where clients (the app, the streaming jobs, `nrtrec up`) reach the query API: the gateway,
    # or one query node. None: http://host:port of this gateway.
    client_url: str | None = None
    request_timeout_s: float = Field(
        default=2.0, gt=0, description="deadline of one call to a shard, failover included"
    )
    write_timeout_s: float = Field(
        default=30.0, gt=0, description="deadline of a write or index change on every replica"
    )
    health_interval_s: float = Field(default=1.0, gt=0, description="between /healthz probes")
    max_connections: int = Field(default=256, ge=1, description="open connections to all nodes")
    access_log: bool = False

    @property
    def url(self) -> str:
        """The query API as clients reach it (``client_url``, else this gateway)."""
        return self.client_url or f"http://{self.host}:{self.port}"


class UserStoreSettings(BaseModel):
    """The online store of user vectors (Redis by default; Couchbase as the design card says)."""

    backend: Literal["redis", "couchbase"] = "redis"
    keep_versions: int = Field(default=3, ge=1, description="model versions kept per user")
    # UserVectors caps recent_items at 1000, so a larger setting could never be stored.
    recent_items: int = Field(
        default=50, ge=0, le=1000, description="recent item ids kept per user"
    )
    ttl_s: int | None = Field(default=30 * 24 * 3600, ge=1, description="None: never expire")
    key_prefix: str = "nrtrec:"
    timeout_s: float = Field(default=0.05, gt=0, description="per store operation")
    # Opening a connection (Couchbase's bootstrap, a Redis socket) takes longer than one
    # operation: CouchbaseMock's bootstrap alone took ~150 ms here, three times timeout_s.
    connect_timeout_s: float = Field(default=2.0, gt=0, description="opening a connection")
    # A put is an optimistic read-merge-write (Redis WATCH, Couchbase CAS); each retry follows
    # a write that another writer got in first, so N writers to one user need at most N - 1.
    write_retries: int = Field(default=10, ge=0, description="retries of a put that lost a race")
    # A catalogue's tastes drift: the last month's views recommend better than all-time ones
    # (bench.relevance chose 30 days: NDCG@10 0.077 against 0.044).
    popular_window_days: int = Field(
        default=30,
        ge=1,
        description="popular items: views of the last N days (up to the newest view)",
    )


class InferenceSettings(BaseModel):
    """The encoders: where versions live, how clients batch and retry."""

    backend: Literal["triton", "local"] = "triton"
    # None: the Triton model repository (triton.model_repository, or the shipped one).
    repository: Path | None = None
    # None: the newest version in the repository.
    model_version: int | None = Field(default=None, ge=1)
    dim: int = Field(default=64, ge=2, description="the shared item/user embedding size")
    max_history: int = Field(default=20, ge=1, description="recent items the user tower reads")
    max_tokens: int = Field(default=64, ge=8, description="listing text is cut to this")
    batch_size: int = Field(default=64, ge=1, description="client-side batch per request")
    timeout_s: float = Field(default=5.0, gt=0)
    retries: int = Field(default=3, ge=0)
    intra_op_num_threads: int = Field(default=1, ge=0, description="in-process onnxruntime")


class StreamingSettings(BaseModel):
    """The PyFlink jobs."""

    checkpoint_dir: Path | None = Field(default=None, description="None: <run_dir>/checkpoints")
    checkpoint_interval_ms: int = Field(default=2000, ge=100)
    parallelism: int = Field(default=1, ge=1)
    # Key groups of the jobs' keyed state, the most subtasks it can ever be split over: fixed
    # for a job's whole life (a checkpoint restores only at the same value). 128 is what Flink
    # derives for parallelism under 86, so checkpoints from before the setting still restore.
    max_parallelism: int = Field(default=128, ge=1, le=32768)
    consumer_group: str = "nrtrec-streaming"
    history_ttl_s: int = Field(default=30 * 24 * 3600, ge=1, description="keyed-state TTL")
    flush_size: int = Field(default=64, ge=1, description="encoder batch: flush at this size")
    flush_ms: int = Field(default=20, ge=1, description="encoder batch: flush after this wait")
    bundle_time_ms: int = Field(default=10, ge=1, description="python.fn-execution.bundle.time")
    keeper_interval_s: float = Field(
        default=5.0, gt=0, description="how often `nrtrec jobs keep` checks the jobs"
    )
    replay_rate: float = Field(default=200.0, gt=0, description="demo clicks per second")
    item_cache_ttl_s: float = Field(default=30.0, ge=0, description="item vectors kept this long")
    # A partial item look-up (a shard behind the gateway not answering) is asked again this
    # long before the user job fails and restarts from its checkpoint: a user vector is never
    # written over part of a history.
    item_lookup_wait_s: float = Field(
        default=20.0, ge=0, description="a partial item look-up asked again this long"
    )
    # The user job's list of serving versions (streaming.serving_versions): a promoted
    # version is written to within about this long.
    versions_ttl_s: float = Field(default=2.0, gt=0)
    # The bulk backfill (`nrtrec bulk`): None means <run_dir>/bulk.
    bulk_dir: Path | None = None
    bulk_load_timeout_s: float = Field(
        default=120.0, gt=0, description="one query node reading and swapping in a snapshot"
    )

    @model_validator(mode="after")
    def _parallelism_fits_the_key_groups(self) -> StreamingSettings:
        if self.parallelism > self.max_parallelism:
            raise ValueError(
                f"parallelism {self.parallelism} is above max_parallelism "
                f"{self.max_parallelism}: keyed state cannot be split over more subtasks"
            )
        return self


class AppSettings(BaseModel):
    """The recommender app."""

    host: str = LOOPBACK
    port: int = 8200
    index_name: str = "items"
    deadline_s: float = Field(default=0.2, gt=0, description="a whole request, end to end")
    store_timeout_s: float = Field(default=0.05, gt=0)
    search_timeout_s: float = Field(default=0.1, gt=0)
    default_k: int = Field(default=10, ge=1)
    max_k: int = Field(default=100, ge=1)
    # A request body past this is refused (413) before it is read: a click event is ~200 bytes.
    max_body_bytes: int = Field(default=64 * 2**10, ge=1024)
    access_log: bool = False
    # Versions with a live index (GET /v1/indexes) are cached this long between listings.
    versions_ttl_s: float = Field(default=1.0, gt=0)
    # The non-personalized fallback: the store's most viewed items, refreshed in the background
    # so it is there when the store is not; `popular_pool` items are kept for filtered requests.
    popular_refresh_s: float = Field(default=5.0, gt=0)
    # A background refresh is not on a request's clock: it may wait longer than a request would.
    popular_refresh_timeout_s: float = Field(default=1.0, gt=0)
    popular_pool: int = Field(default=200, ge=1)
    # The popularity prior (recommender_app/prior.py): a user whose newest click is older than
    # `session_gap_s` gets each candidate's search score plus `popularity_prior` times the
    # item's prior (from its views in the popular window). Returning users mostly view what is
    # popular now; within a session the towers rank better. Defaults: what bench.relevance
    # chose on validation (bench/results/relevance.json, two_tower_prior). 0: never.
    popularity_prior: float = Field(default=4.0, ge=0)
    session_gap_s: float = Field(default=1800.0, gt=0)
    # The fresh-listing boost (recommender_app/fresh.py): a listing whose `listed_at` is at most
    # `fresh_listing_s` old gets `fresh_boost` added to its score. The towers rank new listings
    # far below the items they learned from; without it a new listing rarely reaches a list.
    # Defaults: what bench.relevance chose on validation (two_tower_served). 0: never.
    fresh_boost: float = Field(default=0.075, ge=0)
    fresh_listing_s: float = Field(default=14 * 86_400.0, gt=0)
    # The fresh listings the boost can lift are listed in the background every
    # `fresh_refresh_s` (recommender_app/fresh_pool.py), at most `fresh_pool` of them (the
    # newest), and scored per request in process.
    fresh_refresh_s: float = Field(default=5.0, gt=0)
    fresh_pool: int = Field(default=500, ge=1, le=999)
    # Store calls run in threads of their own, so a hung store takes at most this many.
    store_threads: int = Field(default=16, ge=1)
    # Click tracking: POST /v1/events answers 202 once the broker acknowledged, or 503 after
    # this long. None: kafka.bootstrap_servers.
    kafka_bootstrap: str | None = None
    event_timeout_s: float = Field(default=2.0, gt=0)
    # Events the broker did not acknowledge in time wait here until it does (a JSON-lines file,
    # fsynced). None: <run_dir>/app-spool/clicks.jsonl.
    spool_path: Path | None = None
    # Impressions the broker did not take wait in a spool of their own. None: impressions.jsonl
    # beside the clicks' spool.
    impressions_spool_path: Path | None = None
    # Impressions kept for a broker that is away (in memory and in the spool): about 100 s of
    # 200 requests/s. Past this many the newest are dropped and counted, never waited for.
    impressions_spool_max: int = Field(default=20_000, ge=1)
    recent_shown: int = Field(default=8, ge=0, description="recent views on the homepage")
    # Attributes a caller may filter recommendations on (query parameters), with their type:
    # numbers take range operators. The catalogue's genres are a list, which filters never match.
    filter_attributes: dict[str, Literal["string", "number"]] = Field(
        default_factory=lambda: {
            "category": "string",
            "location": "string",
            "price": "number",
            "year": "number",
        }
    )
    max_connections: int = Field(default=64, ge=1, description="open connections to the gateway")
    # How reads reach the query nodes. "shards": the app fans out over `gateway.shards` itself
    # (one HTTP hop, the gateway's fan-out as a library); "gateway": through `gateway.url` (one
    # more process on the path); "auto": shards when `gateway.shards` names them, else gateway.
    query_path: Literal["auto", "shards", "gateway"] = "auto"

    def reads_shards(self, gateway: GatewaySettings) -> bool:
        """Whether the app's reads go to the shards directly (``query_path``)."""
        if self.query_path == "auto":
            return bool(gateway.shards)
        return self.query_path == "shards"


class ArmSettings(BaseModel):
    """One arm of an experiment: a model version tried first, or the control."""

    name: Label
    model_version: int | None = Field(
        default=None, ge=1, description="None: the control arm, the non-personalized list"
    )
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False, description="relative share")


class ExperimentSettings(BaseModel):
    """An A/B experiment over users (``NRTREC_EXPERIMENT__NAME=ab-1``,
    ``NRTREC_EXPERIMENT__ARMS='[{"name": "control"}, {"name": "v2", "model_version": 2}]'``).

    A user's arm is a stable hash of (name, user id): the same arm on every request and every
    app process, and another draw under another experiment name. Off by default (no name):
    every answer is today's, with arm ``"default"``.
    """

    name: Label | None = None
    arms: list[ArmSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _arms_fit_the_name(self) -> ExperimentSettings:
        if self.name is None and self.arms:
            raise ValueError("arms are given but no experiment name (experiment.name)")
        if self.name is not None and not self.arms:
            raise ValueError(f"experiment {self.name!r} has no arms (experiment.arms)")
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must differ, got {names}")
        if "default" in names:
            # "default" is the arm of answers outside any experiment; a report could not tell.
            raise ValueError('"default" is the arm of answers outside an experiment; rename it')
        return self


class PrometheusSettings(BaseModel):
    """The local runner's Prometheus: it scrapes every service and records the on-call rules."""

    host: str = LOOPBACK
    port: int = 9090
    scrape_interval_s: float = Field(default=5.0, gt=0)
    retention: str = Field(default="2d", description="how long samples are kept (TSDB retention)")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class LocalRunnerSettings(BaseModel):
    """What `nrtrec up` runs beyond the infrastructure."""

    # Each shard owns its share of item-deltas' partitions; each replica of a shard is one more
    # query node reading them (its own consumer group), which the gateway balances over.
    query_node_shards: int = Field(default=2, ge=1)
    query_node_replicas: int = Field(default=2, ge=1)


class Settings(BaseSettings):
    """Read from ``NRTREC_*`` environment variables, or, in a child process of the local
    runner, from the JSON file ``NRTREC_SETTINGS_FILE`` names (``write_settings_file``): the
    whole object its parent chose, so every child runs on exactly its parent's settings."""

    model_config = SettingsConfigDict(
        env_prefix="NRTREC_", env_nested_delimiter="__", extra="ignore"
    )

    run_dir: Path = Field(default=Path(".run"), description="pid files, logs, data of `nrtrec up`")
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "nrtrec",
        description="downloaded jars and built binaries, shared by every run",
    )
    token: str | None = Field(
        default=None, description="bearer token for write/admin endpoints (never empty)"
    )
    # A click event dated further ahead than this is refused (422, or a dead letter): it would
    # pin its item at the top of its user's history. Older ones are fine (late arrivals).
    max_clock_skew_s: float = Field(default=5.0, ge=0)
    startup_timeout_s: float = 180.0
    log_format: Literal["json", "text"] = Field(
        default="json", description="logs of the long-running services: one JSON object a line"
    )
    # One: a service's cores go to its concurrent requests, not to splitting one small matrix
    # product whose idle BLAS workers then spin (nrtrec/core/threads.py).
    blas_threads: int = Field(
        default=1, ge=1, description="BLAS threads numpy may use in each service process"
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    flink: FlinkSettings = FlinkSettings()
    triton: TritonSettings = TritonSettings()
    redis: RedisSettings = RedisSettings()
    couchbase: CouchbaseSettings = CouchbaseSettings()
    query_node: QueryNodeSettings = QueryNodeSettings()
    local: LocalRunnerSettings = LocalRunnerSettings()
    gateway: GatewaySettings = GatewaySettings()
    user_store: UserStoreSettings = UserStoreSettings()
    inference: InferenceSettings = InferenceSettings()
    streaming: StreamingSettings = StreamingSettings()
    app: AppSettings = AppSettings()
    experiment: ExperimentSettings = ExperimentSettings()
    prometheus: PrometheusSettings = PrometheusSettings()

    @field_validator("token")
    @classmethod
    def _token_not_empty(cls, token: str | None) -> str | None:
        # An empty token would read as "no token" somewhere and as a token elsewhere.
        if token is not None and not token.strip():
            raise ValueError(
                'the token is empty (NRTREC_TOKEN=""?): give a secret, or unset it for an open API'
            )
        return token

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = os.environ.get(SETTINGS_FILE_ENV)
        if path:
            # The parent wrote the whole object; the environment it passed on must not
            # override what it chose for this child (a port, a shard's partitions).
            return (init_settings, _SettingsFile(settings_cls, Path(path)))
        return (init_settings, env_settings, dotenv_settings, file_secret_settings)

    def bulk_out_dir(self) -> Path:
        """Where a bulk run writes its snapshots and ``bulk.json``."""
        return self.streaming.bulk_dir or self.run_dir / "bulk"

    def snapshot_import_root(self) -> Path:
        """Below which a query node reads snapshots it is asked to load: the bulk out dir."""
        return self.query_node.import_root or self.bulk_out_dir()

    def shard_urls(self) -> list[list[str]]:
        """Per query-node shard, the base URLs of its replicas: ``gateway.shards`` when
        configured, else the local runner's query nodes."""
        if self.gateway.shards:
            return [list(replicas) for replicas in self.gateway.shards]
        return self.local_shard_urls()

    def with_local_shards(self) -> Settings:
        """These settings with ``gateway.shards`` set to the local runner's query nodes and
        ``num_partitions`` to item-deltas' partitions: what the gateway and the app fan out
        over when ``nrtrec up`` runs them."""
        gw = self.gateway.model_copy(
            update={"shards": self.local_shard_urls(), "num_partitions": self.kafka.partitions}
        )
        return self.model_copy(update={"gateway": gw})

    def local_shard_urls(self) -> list[list[str]]:
        """The local runner's query nodes, per shard its replicas: node ``n`` (shard
        ``n // replicas``, replica ``n % replicas``) listens on ``query_node.port + n``."""
        qn, replicas = self.query_node, self.local.query_node_replicas
        return [
            [f"http://{qn.host}:{qn.port + shard * replicas + r}" for r in range(replicas)]
            for shard in range(self.local.query_node_shards)
        ]

    def shard_map(self) -> ShardMap:
        """Which ``item-deltas`` partitions each shard owns (``ValueError`` if none can)."""
        return ShardMap.of(
            len(self.shard_urls()),
            self.gateway.num_partitions or self.kafka.partitions,
            self.gateway.shard_partitions,
        )

    @classmethod
    def from_file(cls, path: Path | str) -> Settings:
        """The settings a ``write_settings_file`` call wrote (a Flink job reads its own so)."""
        return cls.model_validate(_read_settings_file(Path(path)))


class _SettingsFile(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path):
        super().__init__(settings_cls)
        self._values = _read_settings_file(path)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def _read_settings_file(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read settings from {path} ({SETTINGS_FILE_ENV}): {e}") from e


def write_settings_file(settings: Settings, path: Path) -> Path:
    """``settings`` as the JSON a child process reads back (mode 600: it holds the token).

    The one way settings reach a process the local runner starts: its environment names this
    file (``SETTINGS_FILE_ENV``), or, for a Flink job, its ``--settings`` argument does.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(settings.model_dump_json())
    os.replace(temp, path)
    return path
