"""The instruments of the delta → node section (``freshness.py``): ``DeltaSource`` produces
upserts of new items to item-deltas at a steady rate and hands each to ``FreshnessPoller``, which
searches the node for it until the node returns it."""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from bench.common import unit
from bench.query_node.params import BUCKETS, FRESHNESS_LINGER_MS, MODEL_VERSION, Params
from nrtrec.core.kafka import partition_count, producer_config
from nrtrec.schemas import ItemDelta, ListingOp, encode

# Hits a probe looks among. Not 1: the probe measures when the item is searchable, not the
# graph walk's recall for its own vector.
PROBE_K = 10


@dataclass
class Pending:
    """An item produced to item-deltas and not yet found by a search."""

    item_id: str
    body: bytes  # its search request, encoded once: its own vector, k=PROBE_K
    produced_ns: int  # perf_counter_ns() just before producer.produce()
    last_start_ns: int | None = None  # when its previous (unsuccessful) search started
    polls: int = 0


@dataclass(frozen=True)
class Found:
    item_id: str
    freshness_ns: int  # produce -> the end of the first search that returned the item
    lower_ns: int  # produce -> the start of the search before it (or 0): the item came after
    polls: int


class FreshnessPoller:
    """Searches every pending item for its own vector (k=PROBE_K) until the node answers with its
    id among the hits.

    ``threads`` threads, each with its own keep-alive connection, take the item whose next search
    is due soonest; an item's next search is due ``spacing_s`` after its previous one started,
    and no item is searched by two threads at once. At most ``threads`` searches are in flight:
    when the node is slower than the schedule, the spacing stretches (the JSON reports it) rather
    than the load growing. An item not found within ``deadline_s`` of its produce is given up.
    """

    def __init__(self, url: str, path: str, spacing_s: float, deadline_s: float, threads: int):
        self.url, self.path = url, path
        self.spacing_ns = round(spacing_s * 1e9)
        self.deadline_ns = round(deadline_s * 1e9)
        self._heap: list[tuple[int, int, Pending]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._stopping = False
        self.found: list[Found] = []
        self.missed: list[Pending] = []
        self.search_ns: list[int] = []
        self.errors: Counter[str] = Counter()
        self._threads = [
            threading.Thread(target=self._run, name=f"freshness-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(30)

    def add(self, item: Pending) -> None:
        with self._cond:
            heapq.heappush(self._heap, (item.produced_ns, next(self._seq), item))
            self._cond.notify()

    def reset(self) -> None:
        """Forget what was found so far (after the warm-up)."""
        with self._cond:
            self.found, self.missed, self.search_ns = [], [], []
            self.errors.clear()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Whether every item added was found or given up within ``timeout``."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._heap and not self._in_flight, timeout=timeout
            )

    def _next(self) -> Pending | None:
        with self._cond:
            while not self._stopping:
                if self._heap:
                    wait_ns = self._heap[0][0] - time.perf_counter_ns()
                    if wait_ns <= 0:
                        self._in_flight += 1
                        return heapq.heappop(self._heap)[2]
                    self._cond.wait(wait_ns / 1e9)
                else:
                    self._cond.wait()
            return None

    def _run(self) -> None:
        client = httpx.Client(
            base_url=self.url,
            timeout=5.0,
            trust_env=False,
            headers={"content-type": "application/json"},
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        with client:
            while (item := self._next()) is not None:
                start = time.perf_counter_ns()
                error = None
                try:
                    r = client.post(self.path, content=item.body)
                    r.raise_for_status()
                    items = r.json()["items"]
                    hit = any(found["id"] == item.item_id for found in items)
                except (httpx.HTTPError, ValueError, KeyError) as e:
                    hit, error = False, type(e).__name__
                end = time.perf_counter_ns()
                with self._cond:
                    self._in_flight -= 1
                    self.search_ns.append(end - start)
                    if error is not None:
                        self.errors[error] += 1
                    item.polls += 1
                    if hit:
                        lower = 0 if item.last_start_ns is None else item.last_start_ns
                        self.found.append(
                            Found(
                                item.item_id,
                                end - item.produced_ns,
                                max(0, lower - item.produced_ns),
                                item.polls,
                            )
                        )
                    elif end - item.produced_ns >= self.deadline_ns:
                        self.missed.append(item)
                    else:
                        item.last_start_ns = start
                        due = max(start + self.spacing_ns, end)
                        heapq.heappush(self._heap, (due, next(self._seq), item))
                    self._cond.notify_all()


class DeltaSource:
    """Upserts of new items to item-deltas, each handed to the poller right after its produce.
    Their vectors are the data set's own rows that the index was not given (``spare``), taken
    in turn, or random unit vectors where there are too few: a random vector among tower-like
    data is an outlier, which a graph walk from the entry point missed 1 time in 100 even at
    k=10, and a new listing of the item tower is not one."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        p: Params,
        poller: FreshnessPoller,
        spare: np.ndarray | None = None,
    ):
        self.config = producer_config(
            bootstrap, "nrtrec-bench-freshness", **{"linger.ms": FRESHNESS_LINGER_MS}
        )
        self.producer = Producer(self.config)
        self.topic = topic
        self.partitions = partition_count(self.producer, topic)
        self.poller = poller
        self.dim = p.dim
        self.rng = np.random.default_rng(p.seed + 1)
        self.spare = spare
        self.produced = 0
        self.errors: list[KafkaError] = []

    def _delivered(self, error: KafkaError | None, _: Message) -> None:
        if error is not None:
            self.errors.append(error)

    def run(self, prefix: str, count: int, rate: float, on_produce: Callable[[], None]) -> float:
        """Produce ``count`` upserts at ``rate`` per second; returns the seconds it took from
        the first produce to the last."""
        if self.spare is not None and len(self.spare) >= self.produced + count:
            vectors = self.spare[self.produced : self.produced + count]
        else:
            vectors = unit(self.rng.standard_normal((count, self.dim), dtype=np.float32))
        buckets = self.rng.integers(0, BUCKETS, count).tolist()
        start = time.perf_counter()
        first = last = 0
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            item_id = f"{prefix}-{i}"
            vector = vectors[i].tolist()
            delta = ItemDelta(
                op=ListingOp.UPSERT,
                item_id=item_id,
                model_version=MODEL_VERSION,
                vector=vector,
                attributes={"bucket": buckets[i]},
                source_ts=int(time.time() * 1000),
            )
            body = json.dumps({"vector": vector, "k": PROBE_K}).encode()
            produced = time.perf_counter_ns()
            self.producer.produce(
                self.topic,
                key=delta.key().encode(),
                partition=delta.partition(self.partitions),
                value=encode(delta),
                on_delivery=self._delivered,
            )
            self.poller.add(Pending(item_id, body, produced))
            self.producer.poll(0)
            self.produced += 1
            first = first or produced
            last = produced
            on_produce()
        return (last - first) / 1e9

    def flush(self) -> None:
        left = self.producer.flush(30)
        if left or self.errors:
            raise RuntimeError(
                f"{left} delta(s) undelivered, {len(self.errors)} failed"
                + (f": {self.errors[0]}" if self.errors else "")
            )

    def close(self) -> None:
        """Before the broker stops: a producer still open then logs the lost connection."""
        self.producer.flush(5)
        close = getattr(self.producer, "close", None)  # newer confluent-kafka only
        if close is not None:
            close()
        # Otherwise librdkafka's handle is destroyed with the last reference.
        del self.producer
