"""``NodeProcess``: an ``nrtrec query-node`` subprocess on a free loopback port, and one
keep-alive client to it (the bench index's calls and the node's own metrics), and a lean one for
the timed searches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from pydantic_core import to_json

from bench.common import LeanClient, ServerProcess, free_port, nrtrec_command
from bench.query_node.data import Data
from bench.query_node.params import INDEX, MODEL_VERSION, Params


class NodeProcess(ServerProcess):
    """``nrtrec query-node`` on a free loopback port, and one keep-alive client to it."""

    def __init__(
        self,
        workdir: Path,
        name: str = "query-node",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ):
        port = free_port()
        data_dir = workdir / "data" if name == "query-node" else workdir / f"{name}-data"
        argv = [
            *nrtrec_command(),
            "query-node",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *extra_args,
        ]
        super().__init__(name, argv, workdir, port, env)
        # One connection, reused: the keep-alive case of the DESIGN target. No proxies from env.
        self.client = httpx.Client(
            base_url=self.url,
            timeout=120.0,
            trust_env=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        # The timed searches' own connection (``LeanClient``: why not httpx).
        self.timed = LeanClient("127.0.0.1", port)

    def upsert(self, data: Data, lo: int, hi: int, index: str = INDEX) -> None:
        """Items ``lo:hi`` of the bench data, with their ``bucket`` attribute, in one call."""
        items = [
            {"id": str(i), "vector": v, "attributes": {"bucket": b}}
            for i, v, b in zip(
                range(lo, hi),
                data.vectors[lo:hi].tolist(),
                data.buckets[lo:hi].tolist(),
                strict=True,
            )
        ]
        # Serialised as nrtrec's QueryClient does (pydantic's to_json); httpx's json= is the
        # standard library's, ~30 ms for 1,000 64-d vectors, more than the node's own parse.
        self.client.post(
            f"/v1/indexes/{index}/upsert",
            content=to_json({"items": items}),
            headers={"Content-Type": "application/json"},
        ).raise_for_status()

    def create_index(self, p: Params, max_elements: int, name: str = INDEX) -> None:
        """The bench index, with the same graph parameters as the in-process baseline."""
        self.client.put(
            f"/v1/indexes/{name}",
            json={
                "dim": p.dim,
                "metric": p.metric,
                "model_version": MODEL_VERSION,
                "M": p.M,
                "ef_construction": p.ef_construction,
                "max_elements": max_elements,
            },
        ).raise_for_status()

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        self.wait(
            lambda: self.client.get("/healthz").status_code == 200,
            timeout_s,
            ignoring=(httpx.TransportError,),
        )

    def _metric_families(self, name: str) -> Iterator[Metric]:
        """The families called ``name`` in the node's /metrics, read now."""
        text = self.client.get("/metrics").raise_for_status().text
        return (f for f in text_string_to_metric_families(text) if f.name == name)

    def searches_by_strategy(self) -> Counter[str]:
        """The node's own count of searches of our index by strategy (from /metrics)."""
        counts: Counter[str] = Counter()
        for family in self._metric_families("nrtrec_query_node_searches"):
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("index") == INDEX:
                    counts[sample.labels["strategy"]] += int(sample.value)
        return counts

    def histogram(self, name: str) -> dict[str, float]:
        """One histogram of the node's /metrics: cumulative bucket counts by ``le``, sum, count."""
        out: dict[str, float] = {}
        for family in self._metric_families(name):
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    out[sample.labels["le"]] = sample.value
                elif sample.name.endswith(("_sum", "_count")):
                    out[sample.name.rsplit("_", 1)[1]] = sample.value
        return out

    def close(self, timeout_s: float = 60.0) -> None:
        self.timed.close()
        self.client.close()
        super().close(timeout_s)
