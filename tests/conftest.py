"""Session fixtures that give tests real services.

With a Docker engine answering, the services come from testcontainers; otherwise from the
local runner (the same code as `nrtrec up`), each in its own run directory on free ports so a
developer's own stack keeps running beside the tests. Either way a test sees `Endpoints`.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from nrtrec.core.settings import (
    CouchbaseSettings,
    FlinkSettings,
    KafkaSettings,
    RedisSettings,
    Settings,
    TritonSettings,
)
from tests.stack import Stack


def free_port_run(n: int) -> int:
    """A free port whose ``n - 1`` successors are free too (query node i listens on port + i)."""
    for _ in range(50):
        port = free_port()
        rest = range(port + 1, port + n)
        if all(p not in _handed and _free(p) for p in rest):
            _handed.update(rest)
            return port
    raise RuntimeError(f"no {n} adjacent free ports")


def free_port_pair() -> int:
    """A free port whose successor is free too."""
    return free_port_run(2)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, never handed out twice here.

    A port the kernel picks (``bind(0)``) is an ephemeral one, and a service that starts later
    can find it taken by some process's outbound connection meanwhile (seen: Flink's REST port,
    seconds after it was picked); ports below the range are never used that way.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = _random.randrange(max(1024, low - 12_000), low)
        if port not in _handed and _free(port):
            _handed.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")


_random = random.Random()
_handed: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


@pytest.fixture(scope="session")
def test_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    run_dir = tmp_path_factory.mktemp("run")
    model_repository = tmp_path_factory.mktemp("triton-models")
    return Settings(
        run_dir=run_dir,
        token="test-token",
        kafka=KafkaSettings(port=free_port(), controller_port=free_port()),
        # Two TaskManagers, as cluster mode runs them: a job restored at another parallelism
        # (tests/streaming/test_pipeline.py) has its keyed state split over both.
        flink=FlinkSettings(rest_port=free_port(), rpc_port=free_port(), taskmanagers=2),
        triton=TritonSettings(
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            model_repository=model_repository,
        ),
        redis=RedisSettings(port=free_port()),
        couchbase=CouchbaseSettings(control_port=free_port()),
    )


@pytest.fixture(scope="session")
def stack(test_settings: Settings) -> Iterator[Stack]:
    """Starts each service on first use and stops all of them at the end of the session."""
    s = Stack(test_settings)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def trained_models(test_settings: Settings):
    """Encoder versions 1 and 2, trained for real and registered in the test Triton repository."""
    from tests.models import train_test_models

    return train_test_models(test_settings.triton.model_repository)
