"""The local runner's supervision, on a real service (Redis: it starts in a moment): a process
killed with SIGKILL comes back by itself and is counted; ``up`` never restarts what runs; a
killed supervisord's orphans are stopped by the next ``up``; ``down`` leaves nothing; and Redis
keeps every acknowledged write across its own SIGKILL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from nrtrec.core.settings import RedisSettings, Settings, UserStoreSettings
from nrtrec.deploy import LocalRunner
from nrtrec.deploy.services.redis import RedisService
from nrtrec.schemas import UserVector
from nrtrec.user_store import open_store
from tests.conftest import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def runner(tmp_path: Path):
    settings = Settings(
        run_dir=tmp_path / "run",
        redis=RedisSettings(port=free_port()),
        user_store=UserStoreSettings(timeout_s=2.0),
    )
    runner = LocalRunner(settings, [RedisService(settings)])
    try:
        yield runner
    finally:
        runner.down()


def redis_status(runner: LocalRunner):
    [status] = runner.status()
    return status


def test_a_killed_process_is_restarted_and_counted(runner: LocalRunner) -> None:
    assert runner.up() is True
    first = redis_status(runner)
    assert first.healthy and first.pid and first.restarts == 0
    os.kill(first.pid, signal.SIGKILL)
    wait_until(
        "redis restarted",
        lambda: (s := redis_status(runner)).healthy and s.pid not in (None, first.pid),
    )
    assert redis_status(runner).restarts == 1

    # A second `up` finds it running and healthy: nothing is started, nothing restarted.
    pid = redis_status(runner).pid
    assert LocalRunner(runner.settings, runner.services).up() is False
    assert redis_status(runner).pid == pid


def test_up_after_supervisord_was_killed_stops_its_orphans_and_starts_again(
    runner: LocalRunner,
) -> None:
    runner.up()
    orphan = redis_status(runner).pid
    daemon = int((runner.supervisor.home / "supervisord.pid").read_text())
    os.kill(daemon, signal.SIGKILL)
    wait_until("supervisord gone", lambda: not runner.supervisor.running())
    assert psutil.pid_exists(orphan)  # the service outlives its supervisor...
    assert LocalRunner(runner.settings, runner.services).up() is True
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == "zombie"
    assert redis_status(runner).healthy  # ...until the next `up` takes over


def test_down_leaves_no_process(runner: LocalRunner) -> None:
    runner.up()
    pid = redis_status(runner).pid
    daemon = int((runner.supervisor.home / "supervisord.pid").read_text())
    assert runner.down() >= 1
    for gone in (pid, daemon):
        wait_until(f"pid {gone} gone", lambda g=gone: not psutil.pid_exists(g), 20)
    assert not redis_status(runner).healthy and redis_status(runner).pid is None


def test_redis_keeps_every_acknowledged_write_across_its_sigkill(runner: LocalRunner) -> None:
    runner.up()
    now = int(time.time() * 1000)
    with open_store(runner.settings) as store:
        for i in range(200):
            vector = UserVector(
                user_id=f"u{i}", model_version=1, vector=[1.0, 0.0], source_ts=now, updated_ts=now
            )
            assert store.put(vector, recent_items=[f"item-{i}"])  # acknowledged
    pid = redis_status(runner).pid
    os.kill(pid, signal.SIGKILL)
    wait_until(
        "redis restarted",
        lambda: (s := redis_status(runner)).healthy and s.pid not in (None, pid),
    )
    with open_store(runner.settings) as store:
        missing = [i for i in range(200) if store.get(f"u{i}") is None]
    assert missing == []
