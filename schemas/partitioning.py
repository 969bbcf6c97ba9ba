"""The stable item → partition → shard hash that producers, the backfill and the gateway share.

The partition of an item is what Kafka's partitioner makes of its id: the Java client's default
partitioner for keyed records, ``toPositive(murmur2(utf8(id))) % num_partitions``, reproduced here
bit for bit (``Utils.murmur2`` and ``Utils.toPositive`` of ``org.apache.kafka.common.utils``).

A query-node shard owns a fixed set of partitions (``ShardMap``); a replica is one more reader
of the same partitions, and the gateway routes an item's writes to the shard that owns its
partition. Everything that places an item must agree, so:

- **Every producer of item-deltas gives the partition itself**: ``partition_for(item_id)``
  (``ItemDelta.partition``). The record's key also names the model version (``ItemDelta.key``,
  for compaction), so Kafka's own partitioner would hash something else.
- Producers of other keyed records (``clicks`` by user, ``listings`` by item) set
  ``"partitioner": "murmur2_random"`` (``PRODUCER_CONFIG``, in ``core.kafka.producer_config``):
  librdkafka's name for the Java client's partitioner, where its default, ``consistent_random``,
  hashes keys with CRC32. So a key lands where the Java clients would put it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

PRODUCER_CONFIG: dict[str, str] = {"partitioner": "murmur2_random"}
"""What a confluent_kafka producer of keyed records needs to place them as ``partition_for``."""

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of ``data`` as a signed int, equal to Java's ``Utils.murmur2``."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    tail = length & ~3
    # Four little-endian bytes at a time; every product is reduced mod 2**32 like Java's int.
    for (k,) in struct.iter_unpack("<I", data[:tail]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest:
        if rest == 3:
            h ^= data[tail + 2] << 16
        if rest >= 2:
            h ^= data[tail + 1] << 8
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(h: int) -> int:
    """Java's ``Utils.toPositive``: the sign bit cleared (not ``abs``)."""
    return h & 0x7FFFFFFF


def key_bytes(key: str | bytes) -> bytes:
    """A record key as Kafka sees it: an id is sent as its UTF-8 bytes."""
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def partition_for(key: str | bytes, num_partitions: int) -> int:
    """The partition Kafka's partitioner (Java default, librdkafka ``murmur2_random``) picks."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be at least 1, got {num_partitions}")
    return to_positive(murmur2(key_bytes(key))) % num_partitions


def round_robin(num_shards: int, num_partitions: int) -> list[list[int]]:
    """The default shard map: shard ``s`` owns partitions ``s, s + num_shards, ...``."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    if num_partitions < num_shards:
        raise ValueError(
            f"{num_shards} shards need at least as many partitions, got {num_partitions}; "
            "a shard without a partition would never hold an item"
        )
    return [list(range(s, num_partitions, num_shards)) for s in range(num_shards)]


def partition_to_shard(shard_partitions: Sequence[Sequence[int]], num_partitions: int) -> list[int]:
    """For each partition (the list's index), the shard that owns it.

    ``shard_partitions[s]`` lists the partitions shard ``s`` owns; every partition in
    ``range(num_partitions)`` must be owned by exactly one shard, and every shard must own one.
    """
    owner: list[int | None] = [None] * num_partitions
    for shard, partitions in enumerate(shard_partitions):
        if not partitions:
            raise ValueError(f"shard {shard} owns no partition")
        for p in partitions:
            if not 0 <= p < num_partitions:
                raise ValueError(f"shard {shard}: partition {p} outside 0..{num_partitions - 1}")
            if owner[p] is not None:
                raise ValueError(f"partition {p} is owned by shards {owner[p]} and {shard}")
            owner[p] = shard
    orphans = [p for p, s in enumerate(owner) if s is None]
    if orphans:
        raise ValueError(f"partitions {orphans} are owned by no shard")
    return [s for s in owner if s is not None]


@dataclass(frozen=True)
class ShardMap:
    """Which partitions each shard owns, and so which shard holds an item."""

    partitions: tuple[tuple[int, ...], ...]
    num_partitions: int
    _owner: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = partition_to_shard(self.partitions, self.num_partitions)
        object.__setattr__(self, "_owner", tuple(owner))

    @classmethod
    def of(
        cls,
        num_shards: int,
        num_partitions: int,
        shard_partitions: Sequence[Sequence[int]] | None = None,
    ) -> ShardMap:
        """``shard_partitions`` when given (its length must be ``num_shards``), else
        ``round_robin``."""
        if shard_partitions is None:
            shard_partitions = round_robin(num_shards, num_partitions)
        elif len(shard_partitions) != num_shards:
            raise ValueError(
                f"the shard map lists {len(shard_partitions)} shard(s), expected {num_shards}"
            )
        return cls(tuple(tuple(p) for p in shard_partitions), num_partitions)

    @property
    def num_shards(self) -> int:
        return len(self.partitions)

    def shard_of_partition(self, partition: int) -> int:
        return self._owner[partition]

    def shard_for(self, key: str | bytes) -> int:
        """The shard that holds the item keyed ``key``."""
        return self._owner[partition_for(key, self.num_partitions)]

    def partitions_of(self, shard: int) -> tuple[int, ...]:
        """What a replica of ``shard`` consumes from item-deltas."""
        return self.partitions[shard]
