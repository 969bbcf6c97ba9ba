import pytest
import redis

from nrtrec.schemas import UserVector, UserVectors, decode, encode

pytestmark = pytest.mark.integration


def test_user_vector_record_round_trips_through_redis(stack):
    client = redis.Redis.from_url(stack.redis())
    record = UserVectors(
        user_id="u-redis-1",
        versions=[
            UserVector(
                user_id="u-redis-1",
                model_version=2,
                vector=[0.25, -0.5, 1.0],
                source_ts=1_700_000_000_000,
                updated_ts=1_700_000_000_050,
            )
        ],
    )
    key = f"user-vectors:{record.user_id}"
    client.set(key, encode(record))
    assert decode(UserVectors, client.get(key)) == record
    assert client.delete(key) == 1
    assert client.get(key) is None


def test_redis_runs_with_an_append_only_file(stack):
    client = redis.Redis.from_url(stack.redis())
    assert client.config_get("appendonly") == {"appendonly": "yes"}
