"""A whole stack under a steady load, and the faults an operator fears.

``start_stack`` runs every service of ``nrtrec up`` (Kafka, Flink with both jobs, Triton, Redis,
two shards of two query-node replicas, the gateway, the app) on free loopback ports, under the
local runner's supervision, with encoders trained once per session. ``Load`` drives it the way
production does, each in a thread at a steady rate, and records what the stack acknowledged:

- listings produced to Kafka (acknowledged: the broker's delivery report), new items, updates
  and deletes;
- clicks posted to the app's ``POST /v1/events`` (acknowledged: a 202), a few per user;
- recommendation reads for users that clicked, with the status, ``degraded`` and any item
  given twice in one answer.

``FaultStack.kill`` sends SIGKILL to one or more supervised processes; ``heal`` waits until
every service is healthy again and a fresh listing and a fresh click make it through the whole
pipeline; ``settled`` checks, once the load has stopped, that every acknowledged listing is on
every replica of its shard as last written (deleted ones gone), and every acknowledged click in
its user's stored history. The fault tests and ``bench/faults.py`` share all of it.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from confluent_kafka import KafkaError, Message, Producer

from nrtrec.cli.up import ensure_indexes, ensure_models
from nrtrec.core.kafka import producer_config
from nrtrec.core.settings import (
    AppSettings,
    CouchbaseSettings,
    FlinkSettings,
    GatewaySettings,
    KafkaSettings,
    PrometheusSettings,
    QueryNodeSettings,
    RedisSettings,
    Settings,
    TritonSettings,
)
from nrtrec.deploy import LocalRunner
from nrtrec.deploy.services.base import Process
from nrtrec.deploy.services.flink import FlinkService
from nrtrec.deploy.services.query_nodes import nrtrec_command
from nrtrec.schemas import ListingEvent, ListingOp, encode
from nrtrec.streaming.submit import ensure_jobs
from nrtrec.user_store import StoreError, open_store
from tests.conftest import free_port, free_port_run
from tests.waiting import poll

TOKEN = "fault-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INDEX = "items"
# Items never deleted: what clicks are on, so that every click can become a stored vector.
STABLE_ITEMS = 80
CLICKS_PER_USER = 4
CATEGORIES = ("Drama", "Comedy", "Action", "Horror")


# ---- the stack ----------------------------------------------------------------------------------


@dataclass
class FaultStack:
    runner: LocalRunner

    @property
    def settings(self) -> Settings:
        return self.runner.settings

    def pids(self, process: str) -> int | None:
        info = self.runner.supervisor.info().get(process)
        return info.pid if info is not None and info.alive else None

    def kill(self, processes: Iterable[str]) -> dict[str, int]:
        """SIGKILL each named supervised process; returns the pids killed. What they had
        started themselves is kept in ``orphans_of_kill`` to check that it goes too."""
        killed = {}
        self.orphans_of_kill = []
        for name in processes:
            pid = self.pids(name)
            assert pid is not None, f"{name} is not running"
            self.orphans_of_kill += psutil.Process(pid).children(recursive=True)
            os.kill(pid, signal.SIGKILL)
            killed[name] = pid
        return killed

    def orphans(self) -> list[str]:
        """The killed processes' children still running (``is_running`` checks the start
        time too, so a reused pid does not count)."""
        alive = [p for p in self.orphans_of_kill if p.is_running()]
        return [f"{p.pid} {' '.join(p.cmdline()[:2])}" for p in alive if _not_zombie(p)]

    def restarted(self, killed: dict[str, int]) -> bool:
        """Every killed process runs again, under a new pid."""
        return all(self.pids(name) not in (None, pid) for name, pid in killed.items())

    def healthy(self) -> bool:
        return all(s.healthy for s in self.runner.status())

    def close(self) -> None:
        self.runner.down()


def stack_settings(run_dir: Path, models: Path, kafka_brokers: int = 1) -> Settings:
    """Every port free, this run's own folders, the encoders in ``models``; snapshots often,
    so a restarted node sometimes has one and sometimes replays more. ``kafka_brokers``: one
    broker, or a cluster (node i on kafka port + 2i, its controller on the next port)."""
    kafka_port = free_port_run(2 * kafka_brokers)
    kafka = KafkaSettings(
        port=kafka_port, controller_port=kafka_port + 1, brokers=kafka_brokers,
        heap="1g" if kafka_brokers == 1 else "384m",
    )  # fmt: skip
    return Settings(
        run_dir=run_dir,
        token=TOKEN,
        kafka=kafka,
        flink=FlinkSettings(rest_port=free_port(), rpc_port=free_port()),
        triton=TritonSettings(
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            model_repository=models,
        ),
        redis=RedisSettings(port=free_port()),
        couchbase=CouchbaseSettings(control_port=free_port()),
        query_node=QueryNodeSettings(port=free_port_run(4), snapshot_interval_s=5.0),
        gateway=GatewaySettings(port=free_port()),
        app=AppSettings(port=free_port()),
        prometheus=PrometheusSettings(port=free_port()),
    )


def start_stack(run_dir: Path, trained_repository: Path, kafka_brokers: int = 1) -> FaultStack:
    """The whole stack, its encoders loaded, its indexes declared, both jobs running."""
    models = run_dir.parent / f"{run_dir.name}-models"
    shutil.copytree(trained_repository, models)
    runner = LocalRunner(stack_settings(run_dir, models, kafka_brokers))
    try:
        runner.up()
        settings = runner.settings
        versions = ensure_models(settings)
        ensure_indexes(settings, versions)
        ensure_jobs(settings, FlinkService(settings))
        runner.run(Process("jobs-keeper", nrtrec_command("jobs", "keep"), settings=settings))
    except BaseException:
        runner.down()
        raise
    return FaultStack(runner)


# ---- the load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    at: float  # monotonic
    status: int | None  # None: no answer at all (the app was down)
    ms: float = 0.0  # how long the answer (or the failure) took
    degraded: bool = False
    reasons: tuple[str, ...] = ()
    doubled: bool = False  # an item given twice in one answer


@dataclass
class Load:
    """Listings, clicks and reads against ``stack``, each at its rate per second."""

    stack: FaultStack
    listing_rate: float = 4.0
    click_rate: float = 8.0
    read_rate: float = 8.0
    # What the stack acknowledged: the newest listing of each item, and every click.
    listings: dict[str, ListingEvent] = field(default_factory=dict)
    clicks: list[tuple[str, str]] = field(default_factory=list)  # (user, item)
    # Clicks the app did not take: (when, status or None for no answer at all).
    refused_clicks: list[tuple[float, int | None]] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    users_ready: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _seq: itertools.count = field(default_factory=itertools.count)
    # The produce order of the newest acknowledged listing of each item.
    _order: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.producer = Producer(
            producer_config(self.stack.settings.kafka.bootstrap_servers, "fault-load"),
            # The broker's own death is one of the faults: its reconnect attempts are noise.
            logger=logging.getLogger("tests.faults.kafka"),
        )
        self.random = random.Random(7)

    # -- listings --

    def listing(self, item_id: str, op: ListingOp = ListingOp.UPSERT) -> ListingEvent:
        n = next(self._seq)
        if op is ListingOp.DELETE:
            return ListingEvent(event_id=str(uuid.uuid4()), op=op, item_id=item_id, ts=_now())
        return ListingEvent(
            event_id=str(uuid.uuid4()),
            op=op,
            item_id=item_id,
            ts=_now(),
            title=f"{item_id} revision {n}",
            category=CATEGORIES[n % len(CATEGORIES)],
            price=float(n % 50),
        )

    def publish(self, event: ListingEvent) -> None:
        order = next(self._seq)

        def delivered(error: KafkaError | None, _: Message) -> None:
            if error is None:
                with self.lock:
                    if self._order.get(event.item_id, -1) < order:
                        self._order[event.item_id] = order
                        self.listings[event.item_id] = event

        self.producer.produce(
            self.stack.settings.topics.listings,
            key=event.item_id.encode(),
            value=encode(event),
            on_delivery=delivered,
        )
        self.producer.poll(0)

    def seed_catalogue(self, n: int = 120) -> None:
        for i in range(n):
            self.publish(self.listing(f"fault-item-{i}"))
        assert self.producer.flush(60) == 0

    def _listings(self) -> None:
        created = itertools.count(1000)
        while not self._stop.wait(1 / self.listing_rate):
            roll = self.random.random()
            if roll < 0.5:  # an update of a stable item
                event = self.listing(f"fault-item-{self.random.randrange(STABLE_ITEMS)}")
            elif roll < 0.8:  # a new item
                event = self.listing(f"fault-item-{next(created)}")
            else:  # a delete, of an item clicks never name
                victim = f"fault-item-{self.random.randrange(STABLE_ITEMS, 120)}"
                event = self.listing(victim, ListingOp.DELETE)
            self.publish(event)
        self.producer.flush(60)

    # -- clicks --

    def _clicks(self) -> None:
        app = self.stack.settings.app
        with httpx.Client(base_url=f"http://{app.host}:{app.port}", timeout=5) as client:
            users = (f"fault-user-{n}" for n in itertools.count())
            user, left = next(users), CLICKS_PER_USER
            while not self._stop.wait(1 / self.click_rate):
                item = f"fault-item-{self.random.randrange(STABLE_ITEMS)}"
                at = time.monotonic()
                try:
                    r = client.post("/v1/events", json={"user_id": user, "item_id": item})
                except httpx.HTTPError:
                    self.refused_clicks.append((at, None))  # the app was down
                    continue
                if r.status_code != 202:
                    self.refused_clicks.append((at, r.status_code))
                    continue
                with self.lock:
                    self.clicks.append((user, item))
                left -= 1
                if left == 0:
                    self.users_ready.append(user)
                    user, left = next(users), CLICKS_PER_USER

    # -- reads --

    def _reads(self) -> None:
        app = self.stack.settings.app
        with httpx.Client(base_url=f"http://{app.host}:{app.port}", timeout=5) as client:
            while not self._stop.wait(1 / self.read_rate):
                user = self.random.choice(self.users_ready) if self.users_ready else "nobody"
                at = time.monotonic()
                try:
                    r = client.get(f"/v1/users/{user}/recommendations?k=10")
                except httpx.HTTPError:
                    self.reads.append(Read(at, None, (time.monotonic() - at) * 1000))
                    continue
                ms = (time.monotonic() - at) * 1000
                if r.status_code != 200:
                    self.reads.append(Read(at, r.status_code, ms))
                    continue
                body = r.json()
                ids = [i["id"] for i in body["items"]]
                doubled = len(ids) != len(set(ids))
                reasons = tuple(body["reasons"])
                self.reads.append(Read(at, 200, ms, body["degraded"], reasons, doubled))

    # -- life --

    def start(self) -> None:
        for target in (self._listings, self._clicks, self._reads):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        assert self.producer.flush(60) == 0


# ---- healing and the final account --------------------------------------------------------------


def probe_listing_searchable(stack: FaultStack, load: Load) -> Callable[[], bool]:
    """A new listing now, then: is it searchable through the gateway (in the newest version)?"""
    event = load.listing(f"probe-{uuid.uuid4().hex[:8]}")
    load.publish(event)
    load.producer.flush(5)
    client = httpx.Client(base_url=stack.settings.gateway.url, timeout=3)

    def found() -> bool:
        try:
            r = client.post(f"/v1/indexes/{INDEX}/items", json={"ids": [event.item_id]})
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and [i["id"] for i in r.json()["items"]] == [event.item_id]

    return found


def probe_click_stored(stack: FaultStack) -> Callable[[], bool]:
    """A click through the app now (retried until acknowledged), then: is it stored?"""
    app = stack.settings.app
    user = f"probe-user-{uuid.uuid4().hex[:8]}"
    client = httpx.Client(base_url=f"http://{app.host}:{app.port}", timeout=3)
    posted = False

    def stored() -> bool:
        nonlocal posted
        try:
            if not posted:
                r = client.post("/v1/events", json={"user_id": user, "item_id": "fault-item-1"})
                posted = r.status_code == 202
                return False
            r = client.get(f"/v1/users/{user}/recent-views")
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and [i["id"] for i in r.json()["items"]] == ["fault-item-1"]

    return stored


def heal(stack: FaultStack, load: Load, killed: dict[str, int], timeout_s: float) -> float:
    """Seconds until the killed processes run again, every service is healthy, and a fresh
    listing and a fresh click made it through; fails the test past ``timeout_s``."""
    from tests.waiting import wait_until

    start = time.monotonic()
    wait_until(f"{sorted(killed)} restarted", lambda: stack.restarted(killed), timeout_s)
    wait_until("every service healthy", stack.healthy, timeout_s)
    left = max(10.0, timeout_s - (time.monotonic() - start))
    listed, clicked = probe_listing_searchable(stack, load), probe_click_stored(stack)
    wait_until("a listing made now is searchable", listed, left, interval_s=0.5)
    wait_until("a click made now is stored", clicked, left, interval_s=0.5)
    return time.monotonic() - start


def missing_listings(stack: FaultStack, load: Load) -> list[str]:
    """Every acknowledged listing, as last written, on every replica of its shard (in every
    served version); deleted ones on none. Returns what is not so."""
    settings = stack.settings
    shard_map = settings.shard_map()
    versions = sorted(
        {i["model_version"] for i in httpx.get(f"{settings.gateway.url}/v1/indexes").json()}
    )
    problems = []
    with load.lock:
        latest = dict(load.listings)
    for shard, urls in enumerate(settings.local_shard_urls()):
        mine = [e for i, e in latest.items() if shard_map.shard_for(i) == shard]
        for url in urls:
            for version in versions:
                r = httpx.post(
                    f"{url}/v1/indexes/{INDEX}/items",
                    json={"ids": [e.item_id for e in mine], "model_version": version},
                    timeout=10,
                )
                r.raise_for_status()
                held = {i["id"]: i["attributes"].get("title") for i in r.json()["items"]}
                for event in mine:
                    if event.op is ListingOp.DELETE and event.item_id in held:
                        problems.append(f"{url} v{version}: deleted {event.item_id} still there")
                    elif event.op is ListingOp.UPSERT and held.get(event.item_id) != event.title:
                        problems.append(
                            f"{url} v{version}: {event.item_id} is {held.get(event.item_id)!r},"
                            f" not {event.title!r}"
                        )
    return problems


def missing_clicks(stack: FaultStack, load: Load) -> list[str]:
    """Every acknowledged click in its user's stored history."""
    problems = []
    with open_store(stack.settings) as store:
        for user, item in load.clicks:
            try:
                record = store.get(user)
            except StoreError as e:
                problems.append(f"{user}: {e}")
                continue
            if record is None or item not in record.recent_items:
                problems.append(f"{user} clicked {item}: not in {record and record.recent_items}")
    return problems


def settled(stack: FaultStack, load: Load, timeout_s: float) -> tuple[list[str], list[str]]:
    """Waits (up to ``timeout_s``) for every acknowledged event to be reflected; returns what
    still is not (listings, clicks)."""
    listings: list[str] = []
    clicks: list[str] = []

    def reflected() -> bool:
        nonlocal listings, clicks
        listings, clicks = missing_listings(stack, load), missing_clicks(stack, load)
        return not listings and not clicks

    poll(reflected, timeout_s, interval_s=2.0, ignoring=(httpx.HTTPError,))
    return listings, clicks


def _now() -> int:
    return int(time.time() * 1000)


def _not_zombie(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
