"""`nrtrec query-node` starts a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.query_node.helpers import stop
from tests.waiting import wait_healthy


def test_query_node_command_serves_and_saves_on_stop(tmp_path: Path):
    port = free_port()
    data_dir = tmp_path / "data"
    nrtrec = Path(sys.executable).with_name("nrtrec")
    command = [str(nrtrec), "query-node", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--token", "s3cret"]
    env = {**os.environ, "NRTREC_RUN_DIR": str(tmp_path / "run")}
    log = open(tmp_path / "query-node.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        r = wait_healthy(f"{base}/healthz", process)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        spec = {"dim": 2, "metric": "l2", "model_version": 1}
        assert httpx.put(f"{base}/v1/indexes/items", json=spec).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        r = httpx.put(f"{base}/v1/indexes/items", json=spec, headers=auth)
        assert r.status_code == 201, r.text
    finally:
        stop(process)
        log.close()
    output = (tmp_path / "query-node.log").read_text()
    assert process.returncode == 0, output
    # The command's process froze its start-up heap (nrtrec/core/heap.py).
    assert "objects kept out of garbage collection" in output, output
    # The shutdown saved the index into --data-dir.
    assert [p.name for p in (data_dir / "items" / "1").iterdir()], output


def test_an_empty_token_is_refused_at_start_up(tmp_path: Path):
    """Empty would read as "no token" in one place and as a token in another."""
    nrtrec = str(Path(sys.executable).with_name("nrtrec"))
    base = [nrtrec, "query-node", "--port", str(free_port()), "--data-dir", str(tmp_path)]
    env = {**os.environ, "NRTREC_RUN_DIR": str(tmp_path / "run")}
    for command, extra in (
        (base, {"NRTREC_TOKEN": ""}),
        (base, {"NRTREC_TOKEN": "   "}),
        ([*base, "--token", ""], {}),
        ([nrtrec, "gateway", "--shard", "http://127.0.0.1:1"], {"NRTREC_TOKEN": ""}),
    ):
        done = subprocess.run(
            command, env={**env, **extra}, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1, (command, extra, done.stdout, done.stderr)
        assert "empty" in done.stderr and "Traceback" not in done.stderr, done.stderr
