"""Helpers of the query-node tests: settings, servers stopped like a terminal does, apps served
in a thread. The data helpers (vectors, exact neighbours, recall) are ``tests.ann.helpers``."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from nrtrec.core.settings import Settings
from tests.conftest import free_port
from tests.waiting import wait_until


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
