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
    # The shutdown saved the index into --data-dir.
    assert [p.name for p in (data_dir / "items" / "1").iterdir()], output
