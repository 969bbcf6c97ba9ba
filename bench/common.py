"""What every benchmark shares: the machine record, timing, subprocesses and writing results.

- ``machine_info``: CPU, cores, RAM, Python, library versions, git state and load average;
- ``percentiles``, ``no_gc``, ``timed_rounds``: how a latency is measured and summarised;
- ``free_port``, ``nrtrec_command``, ``wait_for``, ``ServerProcess``: services under test, each
  a process of its own on a free loopback port;
- ``write_results``, ``draw_panels``, ``progress_bar``: the JSON, the PNG and the progress bars.
"""

from __future__ import annotations

import contextlib
import gc
import http.client
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from pydantic_core import from_json, to_json
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# The libraries whose versions a benchmark records by default (``machine_info``).
VERSIONS = ("nrtrec", "hnswlib", "numpy", "fastapi", "uvicorn", "httpx", "uvloop")

# A plot panel draws one figure on ``ax`` from the results; False when its section did not run.
Panel = Callable[[Any, dict[str, Any]], bool]


# ---- data ---------------------------------------------------------------------------------


if TYPE_CHECKING:
    from nrtrec.core.settings import Settings

# Where the benches write their JSON and plots (the README's figures come from there).
RESULTS_DIR = "bench/results"


def unit(x: np.ndarray) -> np.ndarray:
    """Each row scaled to norm 1, as float32."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ---- timing -------------------------------------------------------------------------------


def ms_percentiles(ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50, p95, p99 and mean of durations in milliseconds."""
    a = np.asarray(ms, np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "mean_ms": float(a.mean()),
    }


def percentiles(ns: Sequence[int]) -> dict[str, float]:
    """``ms_percentiles`` of durations in nanoseconds (``time.perf_counter_ns()`` deltas)."""
    return ms_percentiles(np.asarray(ns, np.float64) / 1e6)


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """A collection in the middle of a timed call would land in the tail percentiles."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def timed_rounds(
    paths: dict[str, Callable[[int], Any]],
    count: int,
    warmup: int,
    *,
    after_warmup: Callable[[], None] | None = None,
    progress: Progress | None = None,
    what: str = "",
) -> tuple[dict[str, list[int]], dict[str, list[Any]]]:
    """Call ``i`` (0 .. count - 1) goes through every path in turn, the order rotating per call,
    so drift in the machine's load (it is shared) hits all paths alike. The first ``warmup``
    calls run untimed first, then ``after_warmup``; the garbage collector is off while timed.
    Returns nanoseconds and answers by path."""
    names = list(paths)
    for i in range(min(warmup, count)):
        for name in names:
            paths[name](i)
    if after_warmup is not None:
        after_warmup()
    times: dict[str, list[int]] = {name: [] for name in names}
    answers: dict[str, list[Any]] = {name: [] for name in names}
    task = None if progress is None else progress.add_task(what, total=count)
    with no_gc():
        for i in range(count):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter_ns()
                answer = paths[name](i)
                times[name].append(time.perf_counter_ns() - t0)
                answers[name].append(answer)
            if progress is not None and task is not None:
                progress.advance(task)
    return times, answers


# ---- processes ----------------------------------------------------------------------------


def free_port() -> int:
    """A free loopback port outside the ephemeral range (``tests.conftest.free_port``)."""
    from tests.conftest import free_port as pick

    return pick()


def nrtrec_command() -> list[str]:
    """The ``nrtrec`` console script of this environment."""
    beside = Path(sys.executable).with_name("nrtrec")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("nrtrec")
    if found is None:
        raise RuntimeError("the `nrtrec` console script is not installed (pip install -e .)")
    return [found]


def wait_for(
    ready: Callable[[], object],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 0.2,
    ignoring: tuple[type[BaseException], ...] = (),
    check: Callable[[], None] | None = None,
    detail: Callable[[], str] | None = None,
) -> float:
    """Seconds until ``ready()`` was true, polled every ``interval_s``; ``TimeoutError`` naming
    ``what`` (and ``detail()``) after ``timeout_s``. Exceptions in ``ignoring`` count as "not
    yet"; ``check`` runs first on every round and may raise (a process that exited)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if check is not None:
            check()
        with contextlib.suppress(*ignoring):
            if ready():
                return time.monotonic() - t0
        time.sleep(interval_s)
    more = "" if detail is None else f"\n{detail()}"
    raise TimeoutError(f"{what}: not within {timeout_s:.0f}s{more}")


class ServerProcess:
    """One server process on a loopback ``port``, its output in ``<workdir>/<name>.log``; its
    environment is this process's with ``env`` on top."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        port: int,
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"{name}.log"
        self.argv = argv
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def wait(
        self,
        ready: Callable[[], object],
        timeout_s: float = 90.0,
        ignoring: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        """Until ``ready()``; ``RuntimeError`` as soon as the process exits."""
        wait_for(
            ready,
            timeout_s,
            f"{self.name} ready",
            interval_s=0.1,
            ignoring=ignoring,
            check=self._alive,
            detail=self.tail,
        )

    def wait_healthy(self, timeout_s: float = 90.0) -> None:
        import httpx

        self.wait(lambda: httpx.get(f"{self.url}/healthz", trust_env=False).is_success, timeout_s)

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it is still running after ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class LeanClient:
    """One keep-alive connection (the standard library's ``http.client``, ``TCP_NODELAY``) for
    the requests a bench times: httpx's own work was 0.2-0.45 ms a request on this machine, as
    much as the node's whole search path, and is not what the bench measures. ``post`` and
    ``get`` answer the parsed JSON and raise on anything but a 2xx."""

    def __init__(self, host: str, port: int, timeout_s: float = 120.0):
        self._connection = http.client.HTTPConnection(host, port, timeout=timeout_s)

    def post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, to_json(body))

    def get(self, path: str) -> Any:
        return self._request("GET", path, None)

    def _request(self, method: str, path: str, body: bytes | None) -> Any:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        reused = self._connection.sock is not None
        try:
            response = self._send(method, path, body, headers)
        except (ConnectionError, http.client.RemoteDisconnected):
            if not reused:
                raise
            # The server closed an idle keep-alive connection (uvicorn after 5 s, e.g. while
            # a slow baseline ran): once more on a new one. Every request timed is a read.
            self._connection.close()
            response = self._send(method, path, body, headers)
        raw = response.read()
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{method} {path} answered {response.status}: {raw[:300]!r}")
        return from_json(raw)

    def _send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> http.client.HTTPResponse:
        connection = self._connection
        if connection.sock is None:
            connection.connect()
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.request(method, path, body=body, headers=headers)
        return connection.getresponse()

    def close(self) -> None:
        self._connection.close()


def gc_pauses(url: str) -> dict[str, dict[str, float]] | None:
    """A service's collector pauses so far (``<prefix>_gc_pause_seconds`` and ``_gc_cpu_seconds``
    of its /metrics, ``nrtrec.core.heap``): count, total wall ms and total CPU ms by generation;
    None for a server without them."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except (OSError, http.client.HTTPException):
        return None
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_gc_pause_seconds"):
            total = "ms"
        elif family.name.endswith("_gc_cpu_seconds"):
            total = "cpu_ms"
        else:
            continue
        for sample in family.samples:
            generation = sample.labels.get("generation", "?")
            entry = out.setdefault(generation, {"count": 0.0, "ms": 0.0, "cpu_ms": 0.0})
            if sample.name.endswith("_count") and total == "ms":
                entry["count"] = sample.value
            elif sample.name.endswith("_sum"):
                entry[total] = sample.value * 1e3
    return out or None


def gc_pauses_between(
    before: dict[str, dict[str, float]] | None, after: dict[str, dict[str, float]] | None
) -> dict[str, dict[str, float]] | None:
    """What ``gc_pauses`` counted from ``before`` to ``after``."""
    if before is None or after is None:
        return None
    zero = {"count": 0.0, "ms": 0.0, "cpu_ms": 0.0}
    return {g: {key: a[key] - before.get(g, zero)[key] for key in zero} for g, a in after.items()}


def local_kafka(
    run_dir: Path,
    exits: contextlib.ExitStack,
    on_progress: Callable[[str], None] | None = None,
) -> Settings:
    """One Kafka broker on free loopback ports (the local runner's, files under ``run_dir``),
    stopped when ``exits`` closes, also after a start that failed half-way; its settings (the
    bootstrap, the contract's topics, which it creates). A failed start prints the broker's log
    tails before it raises."""
    from nrtrec.core.settings import KafkaSettings, Settings
    from nrtrec.deploy import LocalRunner
    from nrtrec.deploy.services.kafka import KafkaService
    from nrtrec.deploy.supervisor import log_tail

    settings = Settings(
        run_dir=run_dir, kafka=KafkaSettings(port=free_port(), controller_port=free_port())
    )
    runner = LocalRunner(settings, [KafkaService(settings)])
    exits.callback(runner.down)
    try:
        runner.up(**({"on_progress": on_progress} if on_progress else {}))
    except Exception:
        for log in sorted(run_dir.rglob("*.log")):
            Console(stderr=True).print(f"[red]{log} (tail):[/red]\n{log_tail(log)}")
        raise
    return settings


def query_node_process(
    name: str, workdir: Path, data_dir: Path, token: str, env: dict[str, str] | None = None
) -> ServerProcess:
    """An ``nrtrec query-node`` on a free loopback port, writes closed by ``token``."""
    port = free_port()
    argv = [*nrtrec_command(), "query-node", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--token", token]
    return ServerProcess(name, argv, workdir, port, env)


# ---- machine ------------------------------------------------------------------------------


def package_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(packages: Sequence[str] = VERSIONS) -> dict[str, Any]:
    """The machine a benchmark ran on, the versions of ``packages``, and the git state; the
    caller adds ``loadavg_end`` when it is done."""
    cpu = platform.processor() or None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
                break
    # Tracked files only: a file git does not track yet is listed on its own (``git_untracked``)
    # so a reader can see it is not code the benchmark ran.
    # The benches' own outputs are left out: a run of several data sets writes the first one's
    # JSON before the second starts, which made the second look as if run on changed code.
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", f":!{RESULTS_DIR}")
    untracked = git("ls-files", "--others", "--exclude-standard")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": None if ram is None else round(ram / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {pkg: package_version(pkg) for pkg in packages},
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "git_untracked": None if untracked is None else untracked.split(),
        "loadavg_start": list(os.getloadavg()),
    }


# ---- output -------------------------------------------------------------------------------


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file beside ``path``, then rename it: never half a file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_results(
    out: Path,
    name: str,
    results: dict[str, Any],
    plot: Callable[[dict[str, Any], Path], None],
    *,
    default: Callable[[Any], Any] | None = None,
) -> tuple[Path, Path]:
    """``<out>/<name>.json`` and the PNG ``plot`` draws, ``<out>/<name>.png``; returns both."""
    json_path, png_path = out / f"{name}.json", out / f"{name}.png"
    text = json.dumps(results, indent=2, default=default) + "\n"
    write_atomic(json_path, lambda p: p.write_text(text))
    write_atomic(png_path, lambda p: plot(results, p))
    return json_path, png_path


def draw_panels(
    panels: Sequence[Panel], results: dict[str, Any], path: Path, title: str, cols: int = 3
) -> None:
    """The panels on a grid, ``cols`` a row (a panel that returns False leaves its cell empty),
    under ``title``; written to ``path`` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 5.6 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, panel in zip(flat, panels, strict=False):
        if not panel(ax, results):
            ax.set_visible(False)
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def progress_bar(console: Console, *, remaining: bool = False) -> Progress:
    """Spinner, description, bar, done/total, elapsed (and ``remaining``) time."""
    columns: list[ProgressColumn] = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console)
