"""Helpers of the query-node tests: settings, `nrtrec query-node` processes, servers stopped
like a terminal does, apps served in a thread. The data helpers (vectors, exact neighbours,
recall) are ``tests.ann.helpers``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from nrtrec.core.settings import Settings
from tests import waiting
from tests.conftest import free_port
from tests.waiting import wait_until


def node_settings(tmp_path, token: str | None = "test-token") -> Settings:
    return Settings(run_dir=tmp_path / "run", token=token)


@dataclass
class Node:
    """A `nrtrec query-node` subprocess."""

    url: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def start_node(directory: Path, token: str) -> Node:
    """A query node with its data under ``directory``, writes guarded by ``token``."""
    directory.mkdir(parents=True)
    port = free_port()
    nrtrec = Path(sys.executable).with_name("nrtrec")
    command = [str(nrtrec), "query-node", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--data-dir", str(directory / "data"), "--token", token]
    # k up to 5000 lets a test read back every item a node holds.
    env = {**os.environ, "NRTREC_RUN_DIR": str(directory / "run")}
    env["NRTREC_QUERY_NODE__MAX_K"] = "5000"
    log = directory / "query-node.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Node(f"http://127.0.0.1:{port}", process, log)


def wait_healthy(node: Node) -> None:
    waiting.wait_healthy(f"{node.url}/healthz", node.process, log=node.log)


def stop(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """Stop a server the way a terminal's Ctrl-C does, killing it only if that hangs."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
