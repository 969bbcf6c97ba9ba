"""Encoder benchmark: item and user towers through Triton (gRPC) and in-process (onnxruntime).

    python -m bench.encoders --out bench/results

One run: a temporary directory with a model repository; one encoder pair trained on
MovieLens-100k (``train_pair``, ``--epochs``) and registered as version 1; a Triton server of its
own (the local runner, ``tritonserver`` from the nvidia-pytriton wheel, free loopback ports) with
that version loaded. Then, for each tower and each batch size (1, 32, 256):

- ``in_process``: ``LocalEncoder`` (onnxruntime in this process), **the baseline**;
- ``triton``: ``TritonEncoder`` over gRPC, with the client's ``batch_size`` at least the call's
  batch so that one call is one request.

Calls alternate between the two paths (the order rotating), so drift in the machine's load hits
both alike. A last section runs batch-1 calls from several threads at once, to show what
Triton's dynamic batcher does with concurrent single-row requests. Triton is always stopped at
the end. bench/README.md explains every figure.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tritonclient.grpc as grpcclient
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.common import (
    Panel,
    draw_panels,
    free_port,
    machine_info,
    no_gc,
    percentiles,
    progress_bar,
    write_results,
)
from nrtrec.core.access import triton_admin_headers
from nrtrec.core.datasets import load_movielens
from nrtrec.core.settings import InferenceSettings, Settings, TritonSettings
from nrtrec.deploy import LocalRunner
from nrtrec.deploy.services.triton import TritonService
from nrtrec.deploy.supervisor import log_tail
from nrtrec.inference.client import Encoder, LocalEncoder
from nrtrec.inference.client.triton import TritonEncoder
from nrtrec.inference.lifecycle import ModelLifecycle
from nrtrec.inference.repository import ENCODERS, ITEM_ENCODER, USER_ENCODER, ModelRepository
from nrtrec.inference.text import LENGTH_BUCKET, listing_text
from nrtrec.inference.training.pipeline import train_pair
from nrtrec.inference.training.train import TrainConfig

VERSION = 1
TOWERS = ("item", "user")
MODEL = {"item": ITEM_ENCODER, "user": USER_ENCODER}
PATHS = ("in_process", "triton")
LABELS = {"in_process": "in-process (onnxruntime)", "triton": "Triton gRPC"}
BATCHES = (1, 32, 256)
CLIENT_TIMEOUT_S = 300.0
# The user tower reads this many recent item vectors per user (the towers' max_history).
HISTORY = 20

console = Console(stderr=True)


# ---- parameters and workload ---------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    batches: tuple[int, ...]
    epochs: int
    budget_s: float
    min_calls: int
    max_calls: int
    warmup: int
    min_warmup: int
    threads: tuple[int, ...]
    concurrency_seconds: float
    concurrency: bool
    intra_op_num_threads: int
    seed: int
    quick: bool
    history: int = HISTORY


@dataclass
class Workload:
    """What the towers read: MovieLens listing texts (shuffled) and user histories."""

    texts: list[str]  # one per movie
    histories: np.ndarray  # (users, history, dim) float32: the last items, most recent first
    item_vectors: np.ndarray  # (movies, dim) the item tower's vectors of ``texts`` (in-process)
    token_lengths: dict[str, float]  # of the texts, before bucketing

    def rows(self, tower: str) -> int:
        return len(self.texts) if tower == "item" else len(self.histories)

    def batch(self, tower: str, call: int, size: int) -> Any:
        """Call ``call``'s rows: the next ``size`` rows, wrapping around."""
        idx = np.arange(call * size, (call + 1) * size) % self.rows(tower)
        if tower == "item":
            return [self.texts[i] for i in idx]
        return list(self.histories[idx])  # one (history, dim) array per user, as callers pass


def make_workload(
    repo: ModelRepository, settings: InferenceSettings, seed: int, history: int
) -> Workload:
    """The listing text of every MovieLens movie and, per user with at least ``history`` events,
    the item-tower vectors of the last ``history`` movies they rated, most recent first."""
    data = load_movielens()
    movies = sorted(data.movies.values(), key=lambda m: int(m.item_id))
    texts = []
    for movie in movies:
        listing = movie.listing(0)
        texts.append(listing_text(listing.title, listing.category, listing.aspects))
    # Untimed set-up: onnxruntime on every core (0), not the one thread the timed paths use.
    setup = settings.model_copy(update={"intra_op_num_threads": 0})
    with LocalEncoder(setup, repo) as local:
        vectors = local.encode_texts(texts, VERSION).vectors
        lengths = np.array([int(local.tokenizer([t]).attention_mask.sum()) for t in texts])
    row = {m.item_id: i for i, m in enumerate(movies)}
    histories = []
    for user_id in sorted(data.by_user, key=int):
        events = data.by_user[user_id]
        if len(events) < history:
            continue
        recent = [row[x.item_id] for x in reversed(events[-history:])]
        histories.append(vectors[recent])
    order = np.random.default_rng(seed).permutation(len(texts))
    return Workload(
        texts=[texts[i] for i in order],
        histories=np.stack(histories).astype(np.float32),
        item_vectors=vectors,
        token_lengths={
            "mean": float(lengths.mean()),
            "p50": float(np.percentile(lengths, 50)),
            "max": int(lengths.max()),
            "length_bucket": LENGTH_BUCKET,
        },
    )


def encode(encoder: Encoder, tower: str, rows: Any) -> np.ndarray:
    if tower == "item":
        return encoder.encode_texts(rows, VERSION).vectors
    return encoder.encode_users(rows, VERSION).vectors


# ---- Triton ------------------------------------------------------------------------------


class Triton:
    """``tritonserver`` through the local runner (as ``nrtrec up`` and the tests start it), on
    free loopback ports, serving ``repository``; and a gRPC client for its statistics."""

    def __init__(self, workdir: Path, repository: Path):
        self.settings = Settings(
            run_dir=workdir / "run",
            token="bench",
            triton=TritonSettings(
                http_port=free_port(),
                grpc_port=free_port(),
                metrics_port=free_port(),
                model_repository=repository,
            ),
        )
        self.service = TritonService(self.settings)
        self.runner = LocalRunner(self.settings, [self.service])
        self.grpc_url = self.settings.triton.grpc_url
        self.client: grpcclient.InferenceServerClient | None = None

    def start(self) -> None:
        self.runner.up(on_progress=lambda _: None)
        self.client = grpcclient.InferenceServerClient(url=self.grpc_url)

    @property
    def log(self) -> Path:
        return self.settings.run_dir / "logs" / "triton.log"

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log, lines)

    def server_version(self) -> str | None:
        assert self.client is not None
        return self.client.get_server_metadata(as_json=True).get("version")

    def stats(self, model: str) -> dict[str, int]:
        """Cumulative counters of ``model`` version VERSION (Triton's statistics extension)."""
        assert self.client is not None
        raw = self.client.get_inference_statistics(model, str(VERSION), as_json=True)
        s = raw["model_stats"][0]
        inference = s.get("inference_stats", {})
        out = {
            "inference_count": int(s.get("inference_count", 0)),
            "execution_count": int(s.get("execution_count", 0)),
        }
        for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            entry = inference.get(key, {})
            out[f"{key}_count"] = int(entry.get("count", 0))
            out[f"{key}_ns"] = int(entry.get("ns", 0))
        return out

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.runner.down()


def server_side(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """What Triton itself measured between two statistics snapshots: requests (rows), model
    executions (batches formed by the dynamic batcher) and mean times per request."""
    d = {k: after[k] - before[k] for k in after}
    requests = d["success_count"]
    out: dict[str, Any] = {
        "requests": requests,
        "rows": d["inference_count"],
        "executions": d["execution_count"],
        "mean_rows_per_execution": (
            d["inference_count"] / d["execution_count"] if d["execution_count"] else None
        ),
    }
    if requests:
        for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            name = "request" if key == "success" else key
            out[f"{name}_mean_ms"] = d[f"{key}_ns"] / requests / 1e6
    return out


# ---- measurements ------------------------------------------------------------------------


@dataclass
class Bench:
    params: Params
    work: Workload
    local: LocalEncoder
    triton: TritonEncoder
    server: Triton
    progress: Progress
    results: dict[str, Any] = field(default_factory=dict)


def measure_cell(bench: Bench, tower: str, size: int) -> dict[str, Any]:
    """Sequential calls of ``size`` rows, each through both paths (the order rotating)."""
    p, work = bench.params, bench.work
    encoders: dict[str, Encoder] = {"in_process": bench.local, "triton": bench.triton}
    # Untimed warm-up, which also tells how long a call takes, to fit the calls to the budget.
    # The first call of a shape may be slow (allocations); the estimate leaves it out. Warm-up
    # stops early once it has used a quarter of the budget (big batches of the item tower).
    spent: list[float] = []
    for i in range(p.warmup):
        t0 = time.perf_counter()
        for name in PATHS:
            encode(encoders[name], tower, work.batch(tower, i, size))
        spent.append(time.perf_counter() - t0)
        if len(spent) >= p.min_warmup and sum(spent) > p.budget_s / 4:
            break
    warmup_calls = len(spent)
    per_call = float(np.mean(spent[1:] if len(spent) > 1 else spent))
    calls = int(min(p.max_calls, max(p.min_calls, p.budget_s / max(per_call, 1e-6))))
    times: dict[str, list[int]] = {name: [] for name in PATHS}
    task = bench.progress.add_task(f"{tower} tower, batch {size}", total=calls)
    before = bench.server.stats(MODEL[tower])
    with no_gc():
        for i in range(calls):
            rows = work.batch(tower, warmup_calls + i, size)
            order = PATHS if i % 2 == 0 else PATHS[::-1]
            for name in order:
                t0 = time.perf_counter_ns()
                encode(encoders[name], tower, rows)
                times[name].append(time.perf_counter_ns() - t0)
            bench.progress.advance(task)
    after = bench.server.stats(MODEL[tower])
    out: dict[str, Any] = {
        "batch": size,
        "calls": calls,
        "warmup_calls": warmup_calls,
        "loadavg_1m_end": os.getloadavg()[0],
    }
    for name in PATHS:
        total_s = sum(times[name]) / 1e9
        out[name] = {**percentiles(times[name]), "rows_per_s": calls * size / total_s}
    out["triton"]["server"] = server_side(before, after)
    out["ratios"] = ratios(out["in_process"], out["triton"])
    # Call i sent the same rows through both paths: the median of the per-call ratios is robust
    # where the calls themselves differ (a batch padded to a longer text costs more).
    per_call = np.asarray(times["triton"], np.float64) / np.asarray(times["in_process"])
    out["ratios"]["paired_p50"] = float(np.median(per_call))
    return out


def ratios(base: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    """Triton / in-process: > 1 means Triton's latency is longer or its throughput higher."""
    out = {f"latency_{q}": other[f"{q}_ms"] / base[f"{q}_ms"] for q in ("p50", "p95", "p99")}
    out["throughput"] = other["rows_per_s"] / base["rows_per_s"]
    return out


def section_batches(bench: Bench) -> dict[str, Any]:
    return {
        tower: {f"b{size}": measure_cell(bench, tower, size) for size in bench.params.batches}
        for tower in TOWERS
    }


def run_concurrent(
    bench: Bench, tower: str, path: str, threads: int, seconds: float
) -> dict[str, Any]:
    """``threads`` callers, each sending batch-1 calls back to back for ``seconds``. In-process
    they share one LocalEncoder (onnxruntime runs sessions concurrently, without the GIL);
    through Triton each has its own TritonEncoder (its own gRPC channel)."""
    work = bench.work
    if path == "triton":
        encoders: list[Encoder] = [
            TritonEncoder(
                bench.local.settings.model_copy(update={"batch_size": 1}), bench.server.grpc_url
            )
            for _ in range(threads)
        ]
    else:
        encoders = [bench.local] * threads
    latencies: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def caller(t: int) -> None:
        try:
            call = t * 1000
            for _ in range(3):  # warm-up: connection, versions cache, user-shape metadata
                encode(encoders[t], tower, work.batch(tower, call, 1))
                call += 1
            start.wait()
            while not stop.is_set():
                t0 = time.perf_counter_ns()
                encode(encoders[t], tower, work.batch(tower, call, 1))
                latencies[t].append(time.perf_counter_ns() - t0)
                call += 1
        except BaseException as e:  # reported after the join
            errors.append(e)
            with contextlib.suppress(threading.BrokenBarrierError):
                start.abort()

    workers = [threading.Thread(target=caller, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait()
    before = bench.server.stats(MODEL[tower])
    t0 = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    after = bench.server.stats(MODEL[tower])
    if path == "triton":
        for encoder in encoders:
            encoder.close()
    if errors:
        raise errors[0]
    flat = [x for per in latencies for x in per]
    out = {
        **percentiles(flat),
        "calls": len(flat),
        "seconds": wall,
        "rows_per_s": len(flat) / wall,
        "loadavg_1m_end": os.getloadavg()[0],
    }
    if path == "triton":
        out["server"] = server_side(before, after)
    return out


def section_concurrency(bench: Bench) -> dict[str, Any]:
    """Batch-1 calls from several threads at once, per tower and path."""
    p = bench.params
    out: dict[str, Any] = {"batch": 1, "seconds_per_point": p.concurrency_seconds}
    runs = [(tower, threads) for tower in TOWERS for threads in p.threads]
    task = bench.progress.add_task("concurrent batch-1 callers", total=len(runs) * len(PATHS))
    for tower, threads in runs:
        entry = {}
        # Alternate which path goes first, as for sequential calls.
        order = PATHS if threads % 2 == 0 else PATHS[::-1]
        for path in order:
            entry[path] = run_concurrent(bench, tower, path, threads, p.concurrency_seconds)
            bench.progress.advance(task)
        entry = {path: entry[path] for path in PATHS}
        entry["ratios"] = ratios(entry["in_process"], entry["triton"])
        out.setdefault(tower, {})[f"t{threads}"] = {"threads": threads, **entry}
    return out


# ---- machine and versions ----------------------------------------------------------------


def encoder_machine() -> dict[str, Any]:
    """The shared machine record, with this benchmark's libraries."""
    machine = machine_info(
        (
            "nrtrec",
            "onnxruntime",
            "nvidia-pytriton",
            "tritonclient",
            "grpcio",
            "numpy",
            "tokenizers",
            "jax",
        )
    )
    machine["versions"]["tritonserver"] = None  # filled in once the server answers
    return machine


# ---- plot --------------------------------------------------------------------------------

PATH_COLOURS = {"in_process": "#4c72b0", "triton": "#dd8452"}
TOWER_MARKERS = {"item": "o", "user": "s"}


def _log_axis(ax: Any, axis: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter

    getattr(ax, f"set_{axis}scale")("log")
    getattr(ax, f"{axis}axis").set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _panel_latency(tower: str) -> Panel:
    def panel(ax: Any, results: dict[str, Any]) -> bool:
        cells = results.get("batches", {}).get(tower)
        if not cells:
            return False
        sizes = [c["batch"] for c in cells.values()]
        for path in PATHS:
            colour = PATH_COLOURS[path]
            p50 = [c[path]["p50_ms"] for c in cells.values()]
            p95 = [c[path]["p95_ms"] for c in cells.values()]
            ax.plot(sizes, p50, "-o", color=colour, label=f"{LABELS[path]} p50")
            ax.plot(sizes, p95, "--^", color=colour, alpha=0.8, label=f"{LABELS[path]} p95")
            if path == "triton":
                inside = [c["triton"]["server"].get("request_mean_ms") for c in cells.values()]
                ax.plot(
                    sizes,
                    inside,
                    ":x",
                    color=colour,
                    label="Triton, inside the server (mean: queue + compute)",
                )
            for size, v, c in zip(sizes, p50, cells.values(), strict=True):
                if path == "triton":
                    ratio = c["ratios"]["latency_p50"]
                    text, offset, align = f"{_ms(v)} ms (x{ratio:.2f})", (8, -12), "left"
                else:
                    text, offset, align = f"{_ms(v)} ms", (-8, 6), "right"
                ax.annotate(
                    text,
                    (size, v),
                    xytext=offset,
                    textcoords="offset points",
                    ha=align,
                    fontsize=8,
                    color=colour,
                )
        _log_axis(ax, "x")
        _log_axis(ax, "y")
        ax.set_xticks(sizes)
        ax.set_xlim(sizes[0] / 2.5, sizes[-1] * 2.5)
        ax.set_xlabel("rows per call (batch size, log)")
        ax.set_ylabel("latency per call (ms, log)")
        what = "listing texts" if tower == "item" else f"histories of {HISTORY} item vectors"
        ax.set_title(
            f"{tower.capitalize()} tower: latency per call ({what})\n"
            "(xN): Triton p50 / in-process p50"
        )
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(True, which="major", alpha=0.3)
        return True

    return panel


def _panel_throughput(ax: Any, results: dict[str, Any]) -> bool:
    batches = results.get("batches")
    if not batches:
        return False
    for tower in TOWERS:
        cells = batches[tower]
        sizes = [c["batch"] for c in cells.values()]
        for path in PATHS:
            values = [c[path]["rows_per_s"] for c in cells.values()]
            ax.plot(
                sizes,
                values,
                "-" if path == "in_process" else "--",
                marker=TOWER_MARKERS[tower],
                color=PATH_COLOURS[path],
                label=f"{tower} tower, {LABELS[path]}",
            )
            above = path == "in_process"
            for size, v in zip(sizes, values, strict=True):
                ax.annotate(
                    f"{v:,.0f}",
                    (size, v),
                    xytext=(-6, 5) if above else (6, -11),
                    textcoords="offset points",
                    ha="right" if above else "left",
                    fontsize=7,
                    color=PATH_COLOURS[path],
                )
    _log_axis(ax, "x")
    _log_axis(ax, "y")
    sizes = [c["batch"] for c in batches["item"].values()]
    ax.set_xticks(sizes)
    ax.set_xlim(sizes[0] / 2.5, sizes[-1] * 2.5)
    ax.set_xlabel("rows per call (batch size, log)")
    ax.set_ylabel("rows per second, one caller (log)")
    ax.set_title("Throughput, sequential calls from one thread")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, which="major", alpha=0.3)
    return True


def _panel_ratios(ax: Any, results: dict[str, Any]) -> bool:
    batches = results.get("batches")
    if not batches:
        return False
    keys = [
        ("latency_p50", "latency p50"),
        ("latency_p95", "latency p95"),
        ("throughput", "rows/s"),
    ]
    labels, groups = [], []
    for tower in TOWERS:
        for cell in batches[tower].values():
            labels.append(f"{tower}\nbatch {cell['batch']}")
            groups.append(cell["ratios"])
    x = np.arange(len(labels))
    width = 0.8 / len(keys)
    colours = ["#4c72b0", "#dd8452", "#55a868"]
    for j, (key, name) in enumerate(keys):
        values = [g[key] for g in groups]
        bars = ax.bar(x + (j - 1) * width, values, width, label=name, color=colours[j])
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(
                f"{v:.2f}",
                (bar.get_x() + bar.get_width() / 2, v),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
    paired = [g.get("paired_p50") for g in groups]
    if all(v is not None for v in paired):
        ax.plot(x - width, paired, "k_", markersize=16, markeredgewidth=2)
        ax.plot([], [], "k_", markersize=10, markeredgewidth=2, label="p50 of per-call ratios")
    ax.axhline(1.0, color="black", linewidth=1)
    _log_axis(ax, "y")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 2)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("Triton / in-process (log; 1 = same)")
    ax.set_title("Triton over gRPC relative to in-process, same run")
    ax.legend(fontsize=8, loc="upper right", ncols=2)
    return True


def _panel_concurrency(metric: str) -> Panel:
    def panel(ax: Any, results: dict[str, Any]) -> bool:
        conc = results.get("concurrency")
        if not conc or "error" in conc:
            return False
        for tower in TOWERS:
            points = list(conc[tower].values())
            threads = [pt["threads"] for pt in points]
            for path in PATHS:
                style = "-" if path == "in_process" else "--"
                if metric == "throughput":
                    values = [pt[path]["rows_per_s"] for pt in points]
                else:
                    values = [pt[path]["p50_ms"] for pt in points]
                ax.plot(
                    threads,
                    values,
                    style,
                    marker=TOWER_MARKERS[tower],
                    color=PATH_COLOURS[path],
                    label=f"{tower} tower, {LABELS[path]}"
                    + (" p50 (p95: dotted)" if metric == "latency" else ""),
                )
                if metric == "latency":
                    ax.plot(
                        threads,
                        [pt[path]["p95_ms"] for pt in points],
                        ":",
                        marker=TOWER_MARKERS[tower],
                        color=PATH_COLOURS[path],
                        alpha=0.6,
                    )
                if metric == "throughput" and path == "triton":
                    for t, v, pt in zip(threads, values, points, strict=True):
                        rows = pt["triton"]["server"]["mean_rows_per_execution"]
                        ax.annotate(
                            f"{v:,.0f}/s\n{rows:.1f} rows/exec" if rows else f"{v:,.0f}/s",
                            (t, v),
                            xytext=(5, 4),
                            textcoords="offset points",
                            fontsize=7,
                            color=PATH_COLOURS[path],
                        )
        _log_axis(ax, "x")
        _log_axis(ax, "y")
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 5)  # room for the legend
        threads = [pt["threads"] for pt in conc["item"].values()]
        ax.set_xticks(threads)
        ax.set_xlim(threads[0] / 1.5, threads[-1] * 2)
        ax.set_xlabel("concurrent callers, each sending batch-1 calls back to back (log)")
        if metric == "throughput":
            ax.set_ylabel("rows per second, all callers (log)")
            ax.set_title(
                "Concurrent batch-1 calls: throughput\n"
                "rows/exec: mean rows per model execution (Triton's dynamic batcher)"
            )
        else:
            ax.set_ylabel("latency per call (ms, log)")
            ax.set_title("Concurrent batch-1 calls: latency p50 and p95")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(True, which="major", alpha=0.3)
        return True

    return panel


PANELS: list[Panel] = [
    _panel_latency("item"),
    _panel_latency("user"),
    _panel_throughput,
    _panel_ratios,
    _panel_concurrency("throughput"),
    _panel_concurrency("latency"),
]


def plot(results: dict[str, Any], path: Path) -> None:
    m, model = results["machine"], results["model"]
    v = m["versions"]
    title = (
        f"nrtrec encoders, version {VERSION} ({model['training']}): Triton "
        f"{v['tritonserver']} (nvidia-pytriton {v['nvidia-pytriton']}, Python backend + "
        f"onnxruntime) over gRPC vs in-process onnxruntime {v['onnxruntime']}\n"
        f"{m['cpu']}, {m['usable_cores']} cores, {m['ram_gib']} GiB, Python {m['python']}, "
        f"tritonclient {v['tritonclient']}, {m['date']}"
        + (" (--quick)" if results["params"]["quick"] else "")
    )
    draw_panels(PANELS, results, path, title)


# ---- report ------------------------------------------------------------------------------


def _ms(value: float) -> str:
    """Three significant digits: 0.174, 12.7, 388, 4885."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def summary(results: dict[str, Any]) -> list[Table]:
    tables = []
    table = Table(
        title="sequential calls (T/IP: Triton / in-process; paired: p50 of per-call ratios)"
    )
    for name in ("tower", "batch", "path", "p50 ms", "p95 ms", "p99 ms", "rows/s", "calls"):
        table.add_column(name, justify="left" if name in ("tower", "path") else "right")
    table.add_column("p50 T/IP", justify="right")
    table.add_column("paired", justify="right")
    table.add_column("rows/s T/IP", justify="right")
    for tower, cells in results.get("batches", {}).items():
        for j, cell in enumerate(cells.values()):
            for path in PATHS:
                r, last = cell[path], path == "triton"
                table.add_row(
                    tower,
                    str(cell["batch"]),
                    path,
                    _ms(r["p50_ms"]),
                    _ms(r["p95_ms"]),
                    _ms(r["p99_ms"]),
                    f"{r['rows_per_s']:,.0f}",
                    str(cell["calls"]),
                    f"{cell['ratios']['latency_p50']:.2f}" if last else "",
                    f"{cell['ratios'].get('paired_p50', float('nan')):.2f}" if last else "",
                    f"{cell['ratios']['throughput']:.2f}" if last else "",
                    end_section=last and j == len(cells) - 1,
                )
    tables.append(table)
    conc = results.get("concurrency")
    if not conc:
        return tables
    table = Table(title="concurrent batch-1 calls (rows/exec: Triton's mean batch)")
    for name in ("tower", "threads", "path", "p50 ms", "p95 ms", "rows/s", "rows/exec"):
        table.add_column(name, justify="left" if name in ("tower", "path") else "right")
    table.add_column("p50 T/IP", justify="right")
    table.add_column("rows/s T/IP", justify="right")
    if "error" in conc:
        table.add_row("", "", f"[red]failed: {conc['error']}[/red]")
    for tower in TOWERS:
        points = list(conc.get(tower, {}).values())
        for j, point in enumerate(points):
            for path in PATHS:
                r, last = point[path], path == "triton"
                rows = r.get("server", {}).get("mean_rows_per_execution")
                table.add_row(
                    tower,
                    str(point["threads"]),
                    path,
                    _ms(r["p50_ms"]),
                    _ms(r["p95_ms"]),
                    f"{r['rows_per_s']:,.0f}",
                    f"{rows:.2f}" if rows else "",
                    f"{point['ratios']['latency_p50']:.2f}" if last else "",
                    f"{point['ratios']['throughput']:.2f}" if last else "",
                    end_section=last and j == len(points) - 1,
                )
    tables.append(table)
    return tables


# ---- command line ------------------------------------------------------------------------

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise typer.BadParameter("expected positive integers")
    return values


@app.command()
def main(
    quick: Annotated[
        bool,
        typer.Option(help="a smoke test: 1 epoch, short budgets, fewer calls (about 2 min)"),
    ] = False,
    batches: Annotated[str, typer.Option(help="batch sizes, comma-separated")] = "1,32,256",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="training epochs [default: 2; 1 with --quick]")
    ] = None,
    budget_s: Annotated[
        float | None,
        typer.Option(
            min=0.5,
            help="seconds of timed calls per tower and batch size, both paths together "
            "[default: 25; 4 with --quick]",
        ),
    ] = None,
    min_calls: Annotated[
        int | None,
        typer.Option(min=1, help="timed calls per cell, at least [default: 8; 3 with --quick]"),
    ] = None,
    max_calls: Annotated[
        int | None,
        typer.Option(min=1, help="timed calls per cell, at most [default: 2000; 300 with --quick]"),
    ] = None,
    warmup: Annotated[
        int,
        typer.Option(
            min=1,
            help="untimed calls per cell (each through both paths), at most: warm-up stops "
            "after a quarter of the budget",
        ),
    ] = 10,
    threads: Annotated[
        str, typer.Option(help="concurrent batch-1 callers, comma-separated")
    ] = "1,4,16",
    concurrency_seconds: Annotated[
        float | None,
        typer.Option(min=0.5, help="seconds per concurrency point [default: 4; 1.5 with --quick]"),
    ] = None,
    concurrency: Annotated[bool, typer.Option(help="the concurrent batch-1 section")] = True,
    intra_op_threads: Annotated[
        int, typer.Option(min=1, help="in-process onnxruntime threads (Triton's model uses 1)")
    ] = 1,
    seed: Annotated[int, typer.Option(help="seed of the order of the listing texts")] = 0,
    out: Annotated[Path, typer.Option(help="directory for encoders.json/.png")] = Path(
        "bench/results"
    ),
) -> None:
    """Benchmark the encoders through Triton gRPC against in-process; see bench/README.md."""
    sizes = _ints(batches)
    from nrtrec.inference.repository import MAX_BATCH

    if sizes[-1] > MAX_BATCH:
        raise typer.BadParameter(f"Triton's models take at most {MAX_BATCH} rows per request")
    params = Params(
        batches=sizes,
        epochs=epochs or (1 if quick else 2),
        budget_s=budget_s or (4.0 if quick else 25.0),
        min_calls=min_calls or (3 if quick else 8),
        max_calls=max(min_calls or 1, max_calls or (300 if quick else 2000)),
        warmup=warmup,
        min_warmup=min(warmup, 1 if quick else 2),
        threads=_ints(threads),
        concurrency_seconds=concurrency_seconds or (1.5 if quick else 4.0),
        concurrency=concurrency,
        intra_op_num_threads=intra_op_threads,
        seed=seed,
        quick=quick,
    )
    out.mkdir(parents=True, exist_ok=True)
    # One request per call: the client's batch never cuts a call's rows.
    # No retries and a long deadline: a retried or cut-off request would hide in the timings
    # (a batch of 256 texts takes seconds on one core).
    settings = InferenceSettings(
        batch_size=max(sizes),
        intra_op_num_threads=params.intra_op_num_threads,
        timeout_s=CLIENT_TIMEOUT_S,
        retries=0,
    )
    machine = encoder_machine()
    results: dict[str, Any] = {
        "benchmark": "encoders",
        "machine": machine,
        "params": asdict(params),
        "client_settings": settings.model_dump(mode="json"),
        "timings_s": {},
    }
    started = time.perf_counter()
    server: Triton | None = None
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nrtrec-bench-")))
        progress = stack.enter_context(progress_bar(console))
        repo = ModelRepository(workdir / "models")
        repo.path.mkdir()

        t0 = time.perf_counter()
        task = progress.add_task(f"train and register version {VERSION}", total=None)
        trained = train_pair(
            TrainConfig(epochs=params.epochs),
            settings.max_tokens,
            repository=repo,
            version=VERSION,
            command=f"bench.encoders: train_pair(TrainConfig(epochs={params.epochs}))",
        )
        progress.update(task, total=1, completed=1)
        results["timings_s"]["train"] = time.perf_counter() - t0
        results["model"] = {
            "version": VERSION,
            "training": f"train_pair, {params.epochs} epoch{'s' if params.epochs > 1 else ''}",
            "train_config": asdict(TrainConfig(epochs=params.epochs)),
            "evaluation_two_tower": trained.evaluation["two_tower"],
            "triton_config": {
                name: (repo.path / name / "config.pbtxt").read_text() for name in ENCODERS
            },
        }

        t0 = time.perf_counter()
        task = progress.add_task("start Triton and load the version", total=None)
        server = Triton(workdir, repo.path)
        try:
            server.start()
            results["timings_s"]["triton_start"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            lifecycle = ModelLifecycle(
                repo, server.grpc_url, triton_admin_headers(server.settings.token)
            )
            try:
                lifecycle.load(VERSION)
            finally:
                lifecycle.close()
            results["timings_s"]["triton_load"] = time.perf_counter() - t1
            progress.update(task, total=1, completed=1)
            machine["versions"]["tritonserver"] = server.server_version()

            local = LocalEncoder(settings, repo)
            stack.callback(local.close)
            triton = TritonEncoder(settings, server.grpc_url)
            stack.callback(triton.close)

            t0 = time.perf_counter()
            task = progress.add_task("workload: MovieLens texts and histories", total=None)
            work = make_workload(repo, settings, params.seed, params.history)
            progress.update(task, total=1, completed=1)
            results["timings_s"]["workload"] = time.perf_counter() - t0
            # Both paths give the same vectors (as the tests check), here on the bench's rows.
            check = {}
            for tower in TOWERS:
                rows = work.batch(tower, 0, 64)
                diff = np.abs(encode(local, tower, rows) - encode(triton, tower, rows)).max()
                check[tower] = float(diff)
            results["workload"] = {
                "item_texts": len(work.texts),
                "item_text_example": work.texts[0],
                "item_tokens": work.token_lengths,
                "users": len(work.histories),
                "history": params.history,
                "max_abs_diff_triton_vs_in_process": check,
            }

            bench = Bench(params, work, local, triton, server, progress, results)
            t0 = time.perf_counter()
            results["batches"] = section_batches(bench)
            results["timings_s"]["batches"] = time.perf_counter() - t0
            if params.concurrency:
                t0 = time.perf_counter()
                try:
                    results["concurrency"] = section_concurrency(bench)
                except Exception as e:  # the sequential figures are still worth writing
                    results["concurrency"] = {"error": f"{type(e).__name__}: {e}"}
                results["timings_s"]["concurrency"] = time.perf_counter() - t0
        except Exception:
            console.print(f"[red]Triton log (tail):[/red]\n{server.tail()}")
            raise
        finally:
            triton_stopped = time.perf_counter()
            server.close()
            results["timings_s"]["triton_stop"] = time.perf_counter() - triton_stopped
    machine["loadavg_end"] = list(os.getloadavg())
    results["timings_s"]["total"] = time.perf_counter() - started

    json_path, png_path = write_results(out, "encoders", results, plot)
    for table in summary(results):
        Console(stderr=True, width=max(console.width, 110)).print(table)
    console.print(f"wrote {json_path} and {png_path} in {results['timings_s']['total']:.0f} s")
    if "error" in results.get("concurrency", {}):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
