"""`nrtrec up | status | down` as a user runs them: the whole stack, then nothing left."""

import contextlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import free_port, free_port_run
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

# Two shards of two replicas each: query node n is replica n % 2 of shard n // 2.
# No Couchbase test server: Redis is the store unless Couchbase is chosen.
SERVICES = {
    "kafka", "flink", "triton", "redis", "query-node-0", "query-node-1",
    "query-node-2", "query-node-3", "gateway", "app", "prometheus",
}  # fmt: skip


def _nrtrec(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("nrtrec")
    return subprocess.run(
        [str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _wait(predicate, timeout_s: float, what: str) -> None:
    # While the stack starts, a service may refuse or answer an error body: not yet.
    wait_until(what, predicate, timeout_s, interval_s=1, ignoring=(httpx.HTTPError, KeyError))


@pytest.fixture
def cli_env(tmp_path):
    env = {
        **os.environ,
        "NRTREC_RUN_DIR": str(tmp_path / "run"),
        "NRTREC_TRITON__MODEL_REPOSITORY": str(tmp_path / "models"),
    }
    for var in (
        "KAFKA__PORT",
        "KAFKA__CONTROLLER_PORT",
        "FLINK__REST_PORT",
        "FLINK__RPC_PORT",
        "TRITON__HTTP_PORT",
        "TRITON__GRPC_PORT",
        "TRITON__METRICS_PORT",
        "REDIS__PORT",
        "COUCHBASE__CONTROL_PORT",
        "GATEWAY__PORT",
        "APP__PORT",
        "PROMETHEUS__PORT",
    ):
        env[f"NRTREC_{var}"] = str(free_port())
    # Query node n listens on this port + n.
    env["NRTREC_QUERY_NODE__PORT"] = str(free_port_run(4))
    (tmp_path / "models").mkdir()
    yield env
    _nrtrec(env, "down")


def _process_tree(pids: list[int]) -> list[psutil.Process]:
    """The services' processes and everything their supervisord runs (its event listener, the
    jobs keeper, the replay), with all their children."""
    roots = {}
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            parent = proc.parent()
            if parent is not None and "supervisord" in " ".join(parent.cmdline()):
                proc = parent
            roots[proc.pid] = proc
    procs = {}
    for root in roots.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            for proc in [root, *root.children(recursive=True)]:
                procs[proc.pid] = proc
    return list(procs.values())


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    # Java binds 127.0.0.1 on a dual-stack socket: it shows as ::ffff:127.0.0.1.
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _listening(procs: list[psutil.Process]) -> list[tuple[str, int, str, int]]:
    """(process name, pid, address, port) of every TCP listener and bound UDP socket."""
    found = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            for conn in proc.net_connections(kind="inet"):
                tcp_listen = conn.status == psutil.CONN_LISTEN
                udp_bound = conn.type == socket.SOCK_DGRAM and not conn.raddr
                if (tcp_listen or udp_bound) and conn.laddr:
                    found.append((proc.name(), proc.pid, conn.laddr.ip, conn.laddr.port))
    return found


def test_up_status_down(cli_env):
    up = _nrtrec(cli_env, "up")
    assert up.returncode == 0, up.stderr + up.stdout

    status = _nrtrec(cli_env, "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert {r["name"] for r in rows} == SERVICES
    assert all(r["healthy"] for r in rows), rows
    assert all(r["pid"] and psutil.pid_exists(r["pid"]) for r in rows)
    kafka = next(r for r in rows if r["name"] == "kafka")
    assert kafka["url"] == f"127.0.0.1:{cli_env['NRTREC_KAFKA__PORT']}"
    named = ("flink", "triton", "gateway", "query-node-0", "app")
    http = [r["url"] for r in rows if r["name"] in named]
    assert len(http) == len(named) and all(u.startswith("http://127.0.0.1:") for u in http)

    # Every listener of every process of the stack (children included: the TaskManager's
    # Python workers, Kafka's controller) is on loopback; not one on all interfaces.
    listeners = _listening(_process_tree([r["pid"] for r in rows]))
    assert len({port for *_, port in listeners}) >= len(SERVICES), listeners
    exposed = [entry for entry in listeners if not _is_loopback(entry[2])]
    assert exposed == [], f"listening beyond loopback: {exposed}"

    # The local runner configures a token: writes are closed, reads are open.
    token = (Path(cli_env["NRTREC_RUN_DIR"]) / "token").read_text().strip()
    gateway = next(r["url"] for r in rows if r["name"] == "gateway")
    spec = {"dim": 3, "metric": "cosine", "model_version": 99}
    assert httpx.put(f"{gateway}/v1/indexes/scratch", json=spec).status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    created = httpx.put(f"{gateway}/v1/indexes/scratch", json=spec, headers=auth)
    assert created.status_code == 201, created.text

    # The whole pipeline runs: the replayed catalogue becomes searchable items (listings ->
    # item job -> item-deltas -> query nodes), and replayed clicks become stored user vectors
    # that the app recommends from (clicks -> user job -> Redis -> app).
    def catalogue_size() -> int:
        indexes = httpx.get(f"{gateway}/v1/indexes").json()
        return sum(i["count"] for i in indexes if i["name"] == "items")

    _wait(lambda: catalogue_size() == 1682, 300, "MovieLens catalogue indexed")
    app = next(r["url"] for r in rows if r["name"] == "app")
    first_user = "259"  # the first click of MovieLens-100k in time order
    recommended = lambda: httpx.get(f"{app}/v1/users/{first_user}/recommendations").json()  # noqa: E731
    _wait(lambda: recommended()["source"] == "personalized", 180, "personalized answer")
    assert len(recommended()["items"]) == 10
    # Prometheus scrapes every service, and its coverage rule sees the whole catalogue in each
    # served version (each shard counted once, not once per replica).
    prometheus = next(r["url"] for r in rows if r["name"] == "prometheus")

    def prom(expr: str) -> dict[str, float]:
        r = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
        return {
            x["metric"].get("job") or x["metric"].get("model_version", ""): float(x["value"][1])
            for x in r["data"]["result"]
        }

    jobs = {"prometheus": 1.0, "app": 1.0, "gateway": 1.0, "query-node": 4.0, "triton": 1.0}
    _wait(lambda: prom("sum by (job) (up)") == jobs, 90, "every service scraped")
    _wait(
        lambda: set(prom('nrtrec:index_items:sum_by_version{index="items"}').values()) == {1682.0},
        60,
        "the catalogue in every version, by Prometheus",
    )
    # A user with no history gets popular items.
    answer = httpx.get(f"{app}/v1/users/nobody/recommendations")
    assert answer.status_code == 200 and answer.json()["source"] == "popular", answer.text

    again = _nrtrec(cli_env, "up")
    assert again.returncode == 0 and "already up" in again.stdout

    pids = [r["pid"] for r in rows]
    children = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            children += [c.pid for c in psutil.Process(pid).children(recursive=True)]
    down = _nrtrec(cli_env, "down")
    assert down.returncode == 0, down.stderr
    left = [
        p
        for p in pids + children
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert left == [], f"processes left after down: {left}"
    after = json.loads(_nrtrec(cli_env, "status", "--json").stdout)
    assert not any(r["healthy"] or r["pid"] for r in after)


def test_help_for_every_command(cli_env):
    for args in ([], ["up"], ["down"], ["status"], ["schemas"], ["app"]):
        result = _nrtrec(cli_env, *args, "--help")
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage" in result.stdout


def test_the_listener_check_sees_a_socket_on_every_interface():
    """The check above can fail: a socket on 0.0.0.0 in this very process is caught."""
    with socket.socket() as wide, socket.socket() as narrow:
        wide.bind(("0.0.0.0", 0))
        wide.listen()
        narrow.bind(("127.0.0.1", 0))
        narrow.listen()
        mine = {port: address for *_, address, port in _listening(_process_tree([os.getpid()]))}
        assert not _is_loopback(mine[wide.getsockname()[1]])
        assert _is_loopback(mine[narrow.getsockname()[1]])
