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


def apply_batch(node: QueryNode, index_name: str, messages: list[Message]) -> BatchOutcome:
    """Apply ``messages`` to ``index_name``'s versions on ``node``; the caller holds whatever
    lock keeps its offsets in step with the indexes."""
    outcome = BatchOutcome()
    by_version: dict[int, list[AppliedDelta]] = {}
    for message in messages:
        try:
            item = AppliedDelta(message, decode_delta(message))
        except Unapplicable as unapplicable:
            outcome.dead.append((message, unapplicable))
            continue
        by_version.setdefault(item.delta.model_version, []).append(item)
    for version, items in by_version.items():
        if (index_name, version) not in node.registry:
            error = f"unknown model_version {version} for index {index_name}"
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
    if key is None or key != delta.item_id.encode():
        # The key places the item in its shard; another key puts it in another's.
        shown = None if key is None else payload_text(key)
        raise Unapplicable("key_mismatch", f"key {shown!r} is not the item_id {delta.item_id!r}")
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
