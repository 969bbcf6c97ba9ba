"""One batch of ``item-deltas`` records applied to a node's index, and what could not be.

Consecutive upserts (or deletes) of one ``model_version`` become one ``upsert`` (``delete``)
call; order matters only per item and version, and consecutive runs of one op keep it. A
record that cannot be applied (not JSON, not an ``ItemDelta``, a key that is not its
``item_id``, a version that has no index here, a vector of the wrong dimension) is returned
with the reason, and the records after it still apply.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import Message

from nrtrec.ann import AnnError
from nrtrec.query_node.errors import QueryNodeError
from nrtrec.query_node.node import QueryNode
from nrtrec.schemas import InvalidRecord, ItemDelta, ListingOp, decode, payload_text

log = logging.getLogger(__name__)


@dataclass
class Unapplicable(Exception):
    """Why one record cannot be applied: ``reason`` (a metric label) and ``error`` (its dead
    letter's text)."""

    reason: str
    error: str


@dataclass(frozen=True)
class AppliedDelta:
    message: Message
    delta: ItemDelta


@dataclass
class BatchOutcome:
    applied: list[AppliedDelta] = field(default_factory=list)
    dead: list[tuple[Message, Unapplicable]] = field(default_factory=list)
    # Deltas of a version that was declared and dropped since (their index is gone on purpose),
    # and deltas an index's restored snapshot holds already.
    skipped: list[AppliedDelta] = field(default_factory=list)


class Declared(Protocol):
    """What applying needs of the index declarations (``query_node.declarations``)."""

    def catch_up(self, timeout_s: float = ...) -> object: ...

    def is_dropped(self, name: str, model_version: int) -> bool: ...


def apply_batch(
    node: QueryNode,
    index_name: str,
    messages: list[Message],
    declarations: Declared | None = None,
) -> BatchOutcome:
    """Apply ``messages`` to ``index_name``'s versions on ``node``; the caller holds whatever
    lock keeps its offsets in step with the indexes.

    A version this node has no index of is first looked up in the declarations (read to their
    end): a node never dead-letters a delta for lack of an index it was told to build. Only a
    version nobody declared is a dead letter; one declared and dropped since is skipped.
    """
    outcome = BatchOutcome()
    by_version: dict[int, list[AppliedDelta]] = {}
    for message in messages:
        try:
            item = AppliedDelta(message, decode_delta(message))
        except Unapplicable as unapplicable:
            outcome.dead.append((message, unapplicable))
            continue
        held = node.floor(
            index_name, item.delta.model_version, message.topic(), message.partition()
        )
        if message.offset() < held:
            outcome.skipped.append(item)
            continue
        by_version.setdefault(item.delta.model_version, []).append(item)
    if declarations is not None and any((index_name, v) not in node.registry for v in by_version):
        # Raises when the declarations cannot be read: the batch is then read again later.
        declarations.catch_up(timeout_s=5.0)
    for version, items in by_version.items():
        if (index_name, version) not in node.registry:
            if declarations is not None and declarations.is_dropped(index_name, version):
                outcome.skipped.extend(items)
                continue
            if declarations is None:
                error = f"unknown model_version {version} for index {index_name}"
            else:
                error = f"no index {index_name} version {version} is declared (index-declarations)"
            outcome.dead.extend(
                (item.message, Unapplicable("unknown_version", error)) for item in items
            )
            continue
        for run in _runs(items):
            _apply_run(node, index_name, version, run, outcome)
    return outcome


def decode_delta(message: Message) -> ItemDelta:
    value = message.value()
    if value is None:
        raise Unapplicable("invalid_record", "no value (a tombstone); expected an ItemDelta")
    try:
        delta = decode(ItemDelta, value)
    except InvalidRecord as e:
        raise Unapplicable("invalid_record", str(e)) from None
    key = message.key()
    if key is None or key != delta.key().encode():
        # Compaction keeps the newest record of a key: another key would keep another's.
        shown = None if key is None else payload_text(key)
        raise Unapplicable(
            "key_mismatch", f"key {shown!r} is not {delta.key()!r} (<item_id>@v<model_version>)"
        )
    return delta


def _apply_run(
    node: QueryNode, index_name: str, version: int, run: list[AppliedDelta], outcome: BatchOutcome
) -> None:
    """Apply a run of one op; when the batch call fails, each record alone, so only the bad
    ones become dead letters."""
    deltas = [item.delta for item in run]
    try:
        if deltas[0].op is ListingOp.UPSERT:
            node.upsert(
                index_name,
                [d.item_id for d in deltas],
                [d.vector for d in deltas],
                [d.attributes for d in deltas],
                model_version=version,
            )
        else:
            node.delete(index_name, [d.item_id for d in deltas], model_version=version)
    except Exception as e:
        if len(run) > 1:
            for item in run:
                _apply_run(node, index_name, version, [item], outcome)
            return
        if isinstance(e, QueryNodeError | AnnError):
            outcome.dead.append((run[0].message, Unapplicable(e.code, str(e))))
        else:
            log.exception("item-deltas: applying %s failed", deltas[0].item_id)
            reason = Unapplicable("apply_failed", f"{type(e).__name__}: {e}")
            outcome.dead.append((run[0].message, reason))
        return
    outcome.applied.extend(run)


def _runs(items: list[AppliedDelta]) -> Iterator[list[AppliedDelta]]:
    """Consecutive items of one op."""
    run: list[AppliedDelta] = []
    for item in items:
        if run and item.delta.op is not run[-1].delta.op:
            yield run
            run = []
        run.append(item)
    if run:
        yield run
