"""Helpers of the query-node tests: numpy data, temporary folders, apps served in a thread.

(Not a conftest: these tests run with ``--noconftest``.)
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import uvicorn

from nrtrec.query_node import IndexSpec, Metric, VectorIndex
from nrtrec.settings import QueryNodeSettings, Settings
from tests.conftest import free_port


def random_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def exact_neighbours(data: np.ndarray, queries: np.ndarray, k: int, metric: Metric) -> np.ndarray:
    """Row numbers of the true k nearest, nearest first; the ground truth for recall."""
    if metric is Metric.L2:
        keys = (queries**2).sum(1)[:, None] - 2 * queries @ data.T + (data**2).sum(1)[None]
    elif metric is Metric.IP:
        keys = -(queries @ data.T)
    else:
        unit = data / np.linalg.norm(data, axis=1, keepdims=True)
        keys = -(queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    return np.argsort(keys, axis=1, kind="stable")[:, :k]


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / sum(len(t) for t in truth)


def new_index(
    dim: int = 8,
    metric: Metric | str = Metric.L2,
    settings: QueryNodeSettings | None = None,
    **spec: object,
) -> VectorIndex:
    return VectorIndex(
        IndexSpec(name="items", model_version=1, dim=dim, metric=Metric(metric), **spec),
        settings or QueryNodeSettings(),
    )


def node_settings(tmp_path, token: str | None = "test-token") -> Settings:
    return Settings(run_dir=tmp_path / "run", token=token)


def stop(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """Stop a server the way a terminal's Ctrl-C does, killing it only if that hangs."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.05)


@contextmanager
def serving(app) -> Iterator[str]:
    """``app`` under uvicorn in a thread, lifespan included; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until("the server started", lambda: server.started or not thread.is_alive())
        assert thread.is_alive(), "the server failed to start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
