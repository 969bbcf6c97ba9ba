"""The local runner's Prometheus (Debian's package): its generated config and recording rules
pass ``promtool``; on two real query nodes (two shards) it scrapes every target, and the
coverage rules count each index version's items once per shard; killed with SIGKILL it comes
back under supervision with the samples it had (its write-ahead log)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nrtrec.core.settings import (
    LocalRunnerSettings,
    PrometheusSettings,
    QueryNodeSettings,
    Settings,
)
from nrtrec.deploy import LocalRunner
from nrtrec.deploy.services.prometheus import RECORDING_RULES, PrometheusService
from nrtrec.deploy.services.query_nodes import QueryNodeService
from tests.conftest import free_port, free_port_pair
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

DIM = 4
# Targets up per job: the app, the gateway and Triton are in the config but not run here.
UP = {"prometheus": 1.0, "query-node": 2.0, "app": 0.0, "gateway": 0.0, "triton": 0.0}


def test_generated_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    service = PrometheusService(Settings(run_dir=tmp_path))
    service.prepare()
    checked = subprocess.run(
        ["promtool", "check", "config", str(service.config_path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(RECORDING_RULES)} rules found" in checked.stdout


@pytest.fixture
def runner(tmp_path: Path, stack, test_settings: Settings) -> Iterator[LocalRunner]:
    """Two query nodes (shards 0 and 1, one replica each) and Prometheus scraping them twice a
    second; the nodes follow the session's Kafka."""
    stack.kafka()
    settings = test_settings.model_copy(
        update={
            "run_dir": tmp_path / "run",
            "query_node": QueryNodeSettings(port=free_port_pair()),
            "local": LocalRunnerSettings(query_node_shards=2, query_node_replicas=1),
            "prometheus": PrometheusSettings(port=free_port(), scrape_interval_s=0.5),
        }
    )
    services = [QueryNodeService(settings, 0), QueryNodeService(settings, 1)]
    runner = LocalRunner(settings, [*services, PrometheusService(settings)])
    runner.up()
    try:
        yield runner
    finally:
        runner.down()


def load(url: str, token: str, version: int, ids: list[str]) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    spec = {"dim": DIM, "metric": "cosine", "model_version": version}
    httpx.put(f"{url}/v1/indexes/items", json=spec, headers=auth).raise_for_status()
    items = [{"id": i, "vector": [1.0, float(n), 0.5, 0.0]} for n, i in enumerate(ids)]
    body = {"items": items, "model_version": version}
    httpx.post(f"{url}/v1/indexes/items/upsert", json=body, headers=auth).raise_for_status()


def query(prometheus: str, expr: str, at: float | None = None) -> dict[str, float]:
    """An instant query: per series, its ``model_version`` (or ``job``) label and value."""
    params = {"query": expr, **({"time": str(at)} if at is not None else {})}
    r = httpx.get(f"{prometheus}/api/v1/query", params=params, timeout=5)
    r.raise_for_status()
    out = {}
    for series in r.json()["data"]["result"]:
        labels = series["metric"]
        out[labels.get("model_version") or labels.get("job", "")] = float(series["value"][1])
    return out


def targets(prometheus: str) -> str:
    """Each target's health and last scrape error, for a failure message."""
    active = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    return "; ".join(f"{t['scrapeUrl']} {t['health']} {t['lastError']}" for t in active)


def test_scrapes_every_node_and_counts_coverage_per_version_and_survives_sigkill(
    runner: LocalRunner,
) -> None:
    settings = runner.settings
    prometheus = settings.prometheus.url
    [shard0], [shard1] = settings.local_shard_urls()
    load(shard0, settings.token, 1, ["a", "b", "c"])
    load(shard1, settings.token, 1, ["d", "e"])
    load(shard0, settings.token, 2, ["a"])  # version 2 half-built: one item of five

    wait_until(
        "every target up",
        lambda: query(prometheus, "sum by (job) (up)") == UP,
        60,
        ignoring=(httpx.HTTPError,),
        diagnose=lambda: targets(prometheus),
    )
    expected_items = {"1": 5.0, "2": 1.0}
    wait_until(
        "items per version, each shard once",
        lambda: query(prometheus, "nrtrec:index_items:sum_by_version") == expected_items,
        60,
        ignoring=(httpx.HTTPError,),
    )
    wait_until(
        "coverage per version",
        lambda: query(prometheus, "nrtrec:index_coverage:ratio") == {"1": 1.0, "2": 0.2},
        60,
        ignoring=(httpx.HTTPError,),
    )
    # And what is down is counted, per job.
    wait_until(
        "targets down counted per job",
        lambda: (
            query(prometheus, "nrtrec:targets_down:count")
            == {"app": 1.0, "gateway": 1.0, "triton": 1.0}
        ),
        60,
        ignoring=(httpx.HTTPError,),
    )
    recorded_at = time.time()

    pid = runner.supervisor.info()["prometheus"].pid
    os.kill(pid, signal.SIGKILL)
    status = lambda: next(s for s in runner.status() if s.name == "prometheus")  # noqa: E731
    wait_until(
        "prometheus back under a new pid",
        lambda: status().healthy and status().pid not in (None, pid),
        60,
    )
    # The samples from before the kill are still there (replayed from the WAL) ...
    assert query(prometheus, "nrtrec:index_items:sum_by_version", at=recorded_at) == expected_items
    # ... and scraping goes on.
    wait_until(
        "scraping again after the restart",
        lambda: query(prometheus, "sum by (job) (up)") == UP,
        60,
        ignoring=(httpx.HTTPError,),
    )
