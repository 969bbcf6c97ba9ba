"""The item → partition → shard hash against Kafka's own test vectors (no services)."""

from __future__ import annotations

import pytest

from nrtrec.schemas.partitioning import (
    PRODUCER_CONFIG,
    ShardMap,
    murmur2,
    partition_for,
    partition_to_shard,
    round_robin,
    to_positive,
)

# Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2.
KAFKA_UTILS_TEST = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

# Utils.murmur2 of "1".."12345" (one value per tail length 1, 2, 3, 0 and 1 again), as checked by
# Akka's Murmur2Spec against the Java client.
KAFKA_TAIL_LENGTHS = {
    b"1": -1993445489,
    b"12": 126087238,
    b"123": -267702483,
    b"1234": -1614185708,
    b"12345": -1188365604,
}

# librdkafka, src/rdmurmur2.c, unittest_murmurhashneutral2: the Java client's hash, sign bit
# cleared (what both partitioners take the modulo of).
LIBRDKAFKA_POSITIVE = {
    b"kafka": 1348980580,
    b"amqp": 767747138,
    b"giberish123456789": 257239820,
}


@pytest.mark.parametrize(
    ("data", "expected"), [*KAFKA_UTILS_TEST.items(), *KAFKA_TAIL_LENGTHS.items()]
)
def test_murmur2_equals_the_java_client(data: bytes, expected: int):
    assert murmur2(data) == expected


@pytest.mark.parametrize(("data", "expected"), LIBRDKAFKA_POSITIVE.items())
def test_positive_hash_equals_librdkafka(data: bytes, expected: int):
    assert to_positive(murmur2(data)) == expected


def test_to_positive_clears_the_sign_bit_rather_than_taking_abs():
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0
    assert to_positive(5) == 5


def test_empty_key_hashes():
    # Java: murmur2(new byte[0]) is the seed mixed with a zero length.
    assert murmur2(b"") == 275646681
    assert 0 <= partition_for("", 12) < 12


def test_partition_for_is_the_positive_hash_modulo_partitions():
    for key, h in KAFKA_UTILS_TEST.items():
        for n in (1, 4, 12, 7):
            assert partition_for(key, n) == to_positive(h) % n
            assert partition_for(key.decode(), n) == to_positive(h) % n


def test_keys_are_utf8_bytes():
    assert partition_for("é-item", 12) == partition_for("é-item".encode(), 12)
    assert murmur2("é".encode()) != murmur2("é".encode("latin-1"))


def test_partition_for_rejects_no_partitions():
    with pytest.raises(ValueError):
        partition_for("a", 0)


def test_producers_are_told_to_use_murmur2():
    assert PRODUCER_CONFIG == {"partitioner": "murmur2_random"}


def test_round_robin_shard_map():
    assert round_robin(2, 4) == [[0, 2], [1, 3]]
    assert round_robin(3, 12) == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    assert round_robin(1, 3) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="at least as many partitions"):
        round_robin(5, 4)


def test_partition_to_shard_checks_ownership():
    assert partition_to_shard([[0, 1], [2, 3]], 4) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="owned by shards 0 and 1"):
        partition_to_shard([[0, 1], [1, 2, 3]], 4)
    with pytest.raises(ValueError, match=r"partitions \[3\] are owned by no shard"):
        partition_to_shard([[0, 1], [2]], 4)
    with pytest.raises(ValueError, match="outside"):
        partition_to_shard([[0, 1], [2, 4]], 4)
    with pytest.raises(ValueError, match="owns no partition"):
        partition_to_shard([[0, 1, 2, 3], []], 4)


def test_shard_map_places_items_by_partition():
    m = ShardMap.of(2, 4)
    assert m.num_shards == 2 and m.partitions_of(1) == (1, 3)
    for key in KAFKA_UTILS_TEST:
        assert m.shard_for(key) == partition_for(key, 4) % 2
    explicit = ShardMap.of(2, 4, [[0, 1], [2, 3]])
    assert [explicit.shard_of_partition(p) for p in range(4)] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="lists 1 shard"):
        ShardMap.of(2, 4, [[0, 1, 2, 3]])


def test_shards_get_a_fair_share():
    m = ShardMap.of(3, 12)
    counts = [0, 0, 0]
    for i in range(30_000):
        counts[m.shard_for(f"item-{i}")] += 1
    assert all(9_000 < c < 11_000 for c in counts), counts
