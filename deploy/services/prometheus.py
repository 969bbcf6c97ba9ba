"""Prometheus from Debian's `prometheus` package, scraping every service of `nrtrec up`.

The scrape config and the recording rules are written per run from the settings, so the
targets are always the ports this run's services listen on. Each query node's target carries
``shard`` and ``replica`` labels, so the rules can count an index once per shard (replicas hold
the same items). Both files are JSON, which YAML reads as it is. The rules are what an on-call
person watches (README, "Monitoring"); their names follow Prometheus' ``level:metric:operations``.

Flink is not scraped: its Prometheus reporter (2.2) binds every interface (``new
InetSocketAddress(port)``, no host option), and nothing of a local run listens beyond loopback.
The jobs' progress is on Flink's REST API and UI; their dead letters reach ``dead-letters``.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import httpx

from nrtrec.deploy.errors import InstallFailed
from nrtrec.deploy.services.base import Process, Service

RULES_FILE = "nrtrec-rules.yml"

# (record, expression): evaluated every scrape interval.
RECORDING_RULES: tuple[tuple[str, str], ...] = (
    # Answers per second by endpoint, by the path they took and by the version that served them.
    (
        "nrtrec:app_answers:rate1m",
        "sum by (endpoint, source, model_version) (rate(nrtrec_app_answers_total[1m]))",
    ),
    (
        "nrtrec:app_degraded:rate1m",
        "sum by (endpoint, reason) (rate(nrtrec_app_degraded_total[1m]))",
    ),
    # How old the user vector was when it served a recommendation (its last click's age).
    (
        "nrtrec:app_user_vector_age_seconds:p50",
        "histogram_quantile(0.5, sum by (le, model_version) "
        "(rate(nrtrec_app_user_vector_age_seconds_bucket[5m])))",
    ),
    (
        "nrtrec:app_user_vector_age_seconds:p95",
        "histogram_quantile(0.95, sum by (le, model_version) "
        "(rate(nrtrec_app_user_vector_age_seconds_bucket[5m])))",
    ),
    # The best hit's similarity per version: a drift signal (a new encoder, a changed catalogue).
    (
        "nrtrec:app_top_score:p10",
        "histogram_quantile(0.1, sum by (le, model_version) "
        "(rate(nrtrec_app_top_score_bucket[5m])))",
    ),
    (
        "nrtrec:app_top_score:p50",
        "histogram_quantile(0.5, sum by (le, model_version) "
        "(rate(nrtrec_app_top_score_bucket[5m])))",
    ),
    # Items per index version, each shard counted once (its fullest replica).
    (
        "nrtrec:index_items:sum_by_version",
        "sum by (index, model_version) "
        "(max by (index, model_version, shard) (nrtrec_query_node_index_items))",
    ),
    # Coverage of a version: its items over the largest version's (1 when complete).
    (
        "nrtrec:index_coverage:ratio",
        "nrtrec:index_items:sum_by_version "
        "/ on (index) group_left max by (index) (nrtrec:index_items:sum_by_version)",
    ),
    # Replicas that hold fewer items than their shard's fullest: catching up, or stuck.
    (
        "nrtrec:index_items:replica_behind",
        "max by (index, model_version, shard) (nrtrec_query_node_index_items) "
        "- on (index, model_version, shard) group_right "
        "nrtrec_query_node_index_items",
    ),
    # Dead letters per second, by who wrote them and why.
    (
        "nrtrec:query_node_dead_letters:rate5m",
        "sum by (reason) (rate(nrtrec_query_node_deltas_dead_lettered_total[5m]))",
    ),
    (
        "nrtrec:app_events_failed:rate5m",
        'sum(rate(nrtrec_app_events_total{outcome="failed"}[5m]))',
    ),
    # Consumer lag: item-deltas records a replica has not applied.
    (
        "nrtrec:query_node_delta_consumer_lag:sum",
        "sum by (shard, replica) (nrtrec_query_node_delta_consumer_lag)",
    ),
    # Freshness: a delta's source_ts to its apply on a node (the listing-to-searchable tail).
    (
        "nrtrec:query_node_delta_delay_seconds:p95",
        "histogram_quantile(0.95, sum by (le) "
        "(rate(nrtrec_query_node_delta_delay_seconds_bucket[5m])))",
    ),
    ("nrtrec:query_node_delta_lag_seconds:max", "max(nrtrec_query_node_delta_lag_seconds)"),
    # Targets down, by job: a process supervision has not brought back.
    ("nrtrec:targets_down:count", "count by (job) (up == 0)"),
)


class PrometheusService(Service):
    name = "prometheus"

    def install(self) -> None:
        if shutil.which("prometheus") is None:
            raise InstallFailed(
                "prometheus is not on PATH; install Debian's package "
                "(`apt-get install prometheus`, which the README's set-up runs)"
            )

    @property
    def config_path(self):
        return self.data_dir / "prometheus.yml"

    def scrape_config(self) -> dict[str, Any]:
        s = self.settings
        interval = f"{round(s.prometheus.scrape_interval_s * 1000)}ms"  # durations are integers

        def job(name: str, targets: list[str], **labels: str) -> dict[str, Any]:
            return {"job_name": name, "static_configs": [{"targets": targets, "labels": labels}]}

        nodes: dict[str, Any] = {"job_name": "query-node", "static_configs": []}
        for shard, urls in enumerate(s.local_shard_urls()):
            for replica, url in enumerate(urls):
                nodes["static_configs"].append(
                    {
                        "targets": [url.removeprefix("http://")],
                        "labels": {"shard": str(shard), "replica": str(replica)},
                    }
                )
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(self.data_dir / RULES_FILE)],
            "scrape_configs": [
                job("prometheus", [f"{s.prometheus.host}:{s.prometheus.port}"]),
                job("app", [f"{s.app.host}:{s.app.port}"]),
                job("gateway", [f"{s.gateway.host}:{s.gateway.port}"]),
                nodes,
                job("triton", [f"{s.triton.host}:{s.triton.metrics_port}"]),
            ],
        }

    @staticmethod
    def recording_rules() -> dict[str, Any]:
        rules = [{"record": record, "expr": expr} for record, expr in RECORDING_RULES]
        return {"groups": [{"name": "nrtrec", "rules": rules}]}

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / RULES_FILE).write_text(json.dumps(self.recording_rules(), indent=2))
        self.config_path.write_text(json.dumps(self.scrape_config(), indent=2))

    def processes(self) -> list[Process]:
        cfg = self.settings.prometheus
        argv = [
            "prometheus",
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--storage.tsdb.retention.time={cfg.retention}",
            f"--web.listen-address={cfg.host}:{cfg.port}",
        ]
        return [Process(self.name, argv)]

    def ports(self) -> list[int]:
        return [self.settings.prometheus.port]

    def url(self) -> str:
        return self.settings.prometheus.url

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url()}/-/ready", timeout=1.0, trust_env=False).is_success
        except httpx.HTTPError:
            return False
