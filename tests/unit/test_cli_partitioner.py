"""The CLI finds a saga's partition the way Kafka's Java producer does: toPositive(murmur2(key)) % partitions."""
from __future__ import annotations

import pytest

from saga_cli.kafka import partition_for_key

pytestmark = pytest.mark.unit

# Published in Apache Kafka's own test suite (UtilsTest.testMurmur2), as Java's signed int32.
KAFKA_MURMUR2_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def as_java_int(unsigned: int) -> int:
    return unsigned - (1 << 32) if unsigned >= 1 << 31 else unsigned


@pytest.mark.parametrize(("key", "expected"), KAFKA_MURMUR2_VECTORS.items())
def test_murmur2_matches_kafkas_published_values(key: bytes, expected: int) -> None:
    from aiokafka.partitioner import murmur2

    assert as_java_int(murmur2(key)) == expected


@pytest.mark.parametrize(("key", "java_hash"), KAFKA_MURMUR2_VECTORS.items())
@pytest.mark.parametrize("partitions", [1, 3, 7, 12, 100])
def test_partition_is_the_positive_hash_modulo_the_partition_count(key: bytes, java_hash: int, partitions: int) -> None:
    # Kafka's BuiltInPartitioner.partitionForKey: Utils.toPositive(hash) % numPartitions,
    # where toPositive(n) = n & 0x7fffffff (not abs(): abs(MIN_VALUE) is negative).
    assert partition_for_key(key, partitions) == (java_hash & 0x7FFFFFFF) % partitions


def test_a_negative_java_hash_is_made_positive_by_masking_the_sign_bit() -> None:
    # "21" hashes to -973932308 in Java; masked: 1173551340; 1173551340 % 3 == 0.
    assert partition_for_key(b"21", 3) == 1173551340 % 3 == 0


def test_keys_spread_over_every_partition_and_stay_put() -> None:
    keys = [f"order-{n}".encode() for n in range(200)]
    assert {partition_for_key(key, 3) for key in keys} == {0, 1, 2}
    assert [partition_for_key(key, 3) for key in keys] == [partition_for_key(key, 3) for key in keys]


def test_a_topic_without_partitions_is_refused() -> None:
    with pytest.raises(ValueError):
        partition_for_key(b"x", 0)
