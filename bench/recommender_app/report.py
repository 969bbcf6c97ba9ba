"""The targets (the serving-speed issue) and the table printed at the end."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from bench.recommender_app.params import (
    APP_PATHS,
    BASELINE_PATHS,
    TARGET_P95_MS,
    TARGET_PIPELINE_P95_MS,
    TARGET_PIPELINE_RATE,
)

TARGET_RATE = 200.0


def _at(by_rate: list[dict[str, Any]], rate: float, bound_ms: float) -> dict[str, Any]:
    """Whether the run at ``rate`` kept p95 within ``bound_ms`` with no answer degraded (a
    deadline fallback) and no request failed."""
    entry = next((e for e in by_rate if e["offered_rate"] == rate), None)
    if entry is None or not entry["response"]:
        return {"rate": rate, "bound_ms": bound_ms, "measured": False, "met": False}
    p95 = entry["response"]["p95_ms"]
    failed = sum(n for status, n in entry["statuses"].items() if int(status) >= 500)
    failed += sum(entry["errors"].values())
    return {
        "rate": rate,
        "bound_ms": bound_ms,
        "measured": True,
        "p95_ms": p95,
        "degraded": entry["degraded"],
        "failed": failed,
        "met": p95 <= bound_ms and entry["degraded"] == 0 and failed == 0,
    }


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """p95 <= 25 ms at 200 requests/s on the serving path alone (each app path); p95 <= 50 ms
    at 100 requests/s while the pipeline runs; at those rates no answer degraded."""
    out: dict[str, Any] = {}
    load = results.get("load", {})
    for path in APP_PATHS:
        by_rate = load.get(path, {}).get("by_rate", [])
        out[f"serving_path_{path}"] = _at(by_rate, TARGET_RATE, TARGET_P95_MS)
        out[f"serving_path_{path}"]["p95_ms_by_rate"] = {
            str(e["offered_rate"]): e.get("response", {}).get("p95_ms") for e in by_rate
        }
    if "pipeline" in results:
        by_rate = results["pipeline"]["by_rate"]
        out["with_pipeline"] = _at(by_rate, TARGET_PIPELINE_RATE, TARGET_PIPELINE_P95_MS)
    return out


def summary(results: dict[str, Any]) -> Table:
    table = Table(title="recommender app benchmark")
    for column in ("figure", "p50 ms", "p95 ms", "p99 ms", "degraded"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    base = results["baseline"]
    quantiles = ("p50_ms", "p95_ms", "p99_ms")
    for name in BASELINE_PATHS:
        table.add_row(f"baseline {name}", *(f"{base[name][q]:.2f}" for q in quantiles), "")
    rows = [(f"load, app reads {path}", results["load"][path]["by_rate"]) for path in APP_PATHS]
    if "pipeline" in results:
        rows.append(("with the pipeline", results["pipeline"]["by_rate"]))
    for label, by_rate in rows:
        for e in by_rate:
            if e["response"]:
                r = e["response"]
                what = f"{label} {e['offered_rate']:g}/s (got {e['achieved_rate']:.0f}/s)"
                table.add_row(what, *(f"{r[q]:.2f}" for q in quantiles), str(e["degraded"]))
    return table
