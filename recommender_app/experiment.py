"""The report of an A/B experiment, from the ``impressions`` and ``clicks`` topics.

Per arm of the experiment:

- ``impressions``: the lists served under the arm (each ``request_id`` once: a record sent
  twice, at least once, counts once), their ``users`` and the ``sources`` they took;
- ``clicks``: clicks that name one of those lists (``request_id``), by the user it was served
  to, on an item it held; ``clicked``: the lists with at least one such click;
- ``ctr`` = clicked / impressions, a binomial proportion, with its Wilson score interval;
- ``recommended_share`` = clicks / ``user_clicks``, the clicks of the arm's users from their
  first impression in the arm on (any action, any list or none): how much of what they click
  the arm's lists brought them.

Clicks count once each (by ``event_id``). A click naming a list that is not this experiment's
(or another user's) counts in ``clicks_unmatched``. ``TopicReader`` reads a topic from the
start to the end each partition had when it began (its high watermark), then stops.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Generic, TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition
from pydantic import BaseModel

from nrtrec.schemas import ClickEvent, Impression, InvalidRecord, decode

M = TypeVar("M", bound=BaseModel)


class ReportError(Exception):
    """The topics could not be read to their end (absent, or too slow within the timeout)."""


def z_of(confidence: float) -> float:
    """The two-sided normal quantile of ``confidence`` (1.96 for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"the confidence is between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, trials: int, z: float) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes`` in ``trials``; None without trials. Unlike
    p ± z·se it stays in [0, 1] and is not empty at 0 or ``trials`` successes."""
    if trials <= 0:
        return None
    p = successes / trials
    z2 = z * z
    scale = 1 + z2 / trials
    center = (p + z2 / (2 * trials)) / scale
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / scale
    return max(0.0, center - half), min(1.0, center + half)


@dataclass
class ArmReport:
    arm: str
    # The arm's version in the settings the report ran with (None: control, or not known).
    model_version: int | None = None
    users: int = 0
    impressions: int = 0
    clicked: int = 0
    clicks: int = 0
    user_clicks: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    ctr: float | None = None
    ctr_low: float | None = None
    ctr_high: float | None = None
    recommended_share: float | None = None


@dataclass
class ExperimentReport:
    experiment: str | None
    confidence: float
    arms: list[ArmReport]
    # Valid records read, of every experiment and user; and those that did not validate.
    impressions_read: int = 0
    clicks_read: int = 0
    unreadable: int = 0
    clicks_unmatched: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def aggregate(
    impressions: Iterable[Impression],
    clicks: Iterable[ClickEvent],
    experiment: str | None,
    *,
    arms: Sequence[tuple[str, int | None]] = (),
    confidence: float = 0.95,
) -> ExperimentReport:
    """The report of ``experiment`` (None: the lists served outside any experiment). ``arms``
    (name, version) come first, in that order, with zeros when nothing was served under one;
    arms seen only in the impressions follow, by name."""
    z = z_of(confidence)
    served: dict[str, Impression] = {}
    impressions_read = 0
    for impression in impressions:
        impressions_read += 1
        if impression.experiment == experiment:
            served.setdefault(impression.request_id, impression)
    rows = {name: ArmReport(name, version) for name, version in arms}
    users: dict[str, set[str]] = defaultdict(set)
    sources: dict[str, Counter[str]] = defaultdict(Counter)
    # user -> arm -> the time of the user's first impression in the arm.
    exposed: dict[str, dict[str, int]] = defaultdict(dict)
    for impression in served.values():
        arm = impression.arm
        rows.setdefault(arm, ArmReport(arm))
        rows[arm].impressions += 1
        users[arm].add(impression.user_id)
        sources[arm][impression.source.value] += 1
        first = exposed[impression.user_id].get(arm)
        if first is None or impression.ts < first:
            exposed[impression.user_id][arm] = impression.ts
    listed = {request_id: set(i.items) for request_id, i in served.items()}

    clicked: dict[str, set[str]] = defaultdict(set)
    seen: set[str] = set()
    unmatched = read = 0
    for click in clicks:
        read += 1
        # Only the experiment's users' clicks are kept (the topic holds everyone's).
        if click.user_id not in exposed and click.request_id is None:
            continue
        if click.event_id in seen:
            continue
        seen.add(click.event_id)
        credited: str | None = None
        if click.request_id is not None:
            impression = served.get(click.request_id)
            if impression is None or impression.user_id != click.user_id:
                unmatched += 1
            elif click.item_id in listed[click.request_id]:
                credited = impression.arm
                rows[credited].clicks += 1
                clicked[credited].add(click.request_id)
        for arm, first_ts in exposed.get(click.user_id, {}).items():
            # A credited click counts whatever its ts says (a client's clock may lag).
            if arm == credited or click.ts >= first_ts:
                rows[arm].user_clicks += 1

    for name, row in rows.items():
        row.users = len(users[name])
        row.sources = dict(sorted(sources[name].items()))
        row.clicked = len(clicked[name])
        interval = wilson(row.clicked, row.impressions, z)
        if interval is not None:
            row.ctr = row.clicked / row.impressions
            row.ctr_low, row.ctr_high = interval
        if row.user_clicks:
            row.recommended_share = row.clicks / row.user_clicks
    given = [name for name, _ in arms]
    order = given + sorted(set(rows) - set(given))
    return ExperimentReport(
        experiment=experiment,
        confidence=confidence,
        arms=[rows[name] for name in order],
        impressions_read=impressions_read,
        clicks_read=read,
        clicks_unmatched=unmatched,
    )


class TopicReader(Generic[M]):
    """Iterates every record of ``topic`` up to the end each partition had when the iteration
    began (its high watermark), validated as ``model``, then stops; ``unreadable`` counts those
    that did not validate. ``ReportError`` when the topic is absent or its end is not reached
    within ``timeout_s``."""

    def __init__(self, bootstrap: str, topic: str, model: type[M], timeout_s: float = 60.0):
        self.bootstrap = bootstrap
        self.topic = topic
        self.model = model
        self.timeout_s = timeout_s
        self.unreadable = 0

    def __iter__(self) -> Iterator[M]:
        deadline = time.monotonic() + self.timeout_s
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                # Partitions are assigned, not subscribed: the group is never joined or committed.
                "group.id": f"nrtrec-report-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
        try:
            ends, start = self._ends(consumer, deadline)
            if not start:
                return
            consumer.assign(start)
            left = dict(ends)
            while left:
                if time.monotonic() > deadline:
                    raise ReportError(
                        f"{self.topic}: partitions {sorted(left)} not read to their end "
                        f"in {self.timeout_s:g} s"
                    )
                for message in consumer.consume(1000, timeout=0.2):
                    if message.error() is not None:
                        continue  # a transient broker error; librdkafka retries
                    if message.offset() >= ends[message.partition()]:
                        continue  # written after the report began
                    try:
                        yield decode(self.model, message.value() or b"")
                    except InvalidRecord:
                        self.unreadable += 1
                # The position, not the last offset seen: the last offsets may hold no record
                # (a compacted one, a transaction marker).
                for tp in consumer.position([TopicPartition(self.topic, p) for p in left]):
                    if tp.offset >= ends[tp.partition]:
                        left.pop(tp.partition, None)
        finally:
            consumer.close()

    def _ends(
        self, consumer: Consumer, deadline: float
    ) -> tuple[dict[int, int], list[TopicPartition]]:
        """Each non-empty partition's high watermark, and where reading it starts."""
        try:
            metadata = consumer.list_topics(self.topic, timeout=self.timeout_s)
        except KafkaException as e:
            raise ReportError(f"cannot reach Kafka at {self.bootstrap}: {e}") from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise ReportError(f"topic {self.topic!r} is not there at {self.bootstrap}")
        ends: dict[int, int] = {}
        start: list[TopicPartition] = []
        for partition in sorted(topic.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition),
                timeout=max(1.0, deadline - time.monotonic()),
            )
            if high > low:
                ends[partition] = high
                start.append(TopicPartition(self.topic, partition, low))
        return ends, start


def experiment_report(
    bootstrap: str,
    impressions_topic: str,
    clicks_topic: str,
    experiment: str | None,
    *,
    arms: Sequence[tuple[str, int | None]] = (),
    confidence: float = 0.95,
    timeout_s: float = 60.0,
) -> ExperimentReport:
    """Both topics read to their end, then ``aggregate`` (the clicks as they are read: only the
    experiment's users' are kept)."""
    deadline = time.monotonic() + timeout_s
    impressions = TopicReader(bootstrap, impressions_topic, Impression, timeout_s)
    served = list(impressions)
    clicks = TopicReader(bootstrap, clicks_topic, ClickEvent, max(1.0, deadline - time.monotonic()))
    report = aggregate(served, clicks, experiment, arms=arms, confidence=confidence)
    report.unreadable = impressions.unreadable + clicks.unreadable
    return report
