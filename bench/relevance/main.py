"""``python -m bench.relevance``: the two towers against strong baselines, on a global time split.

One cut ``T`` at a quantile of event time (default 80 %) and a validation cut ``T_val`` (70 %).
Every method's knobs (the towers' epochs and temperature included) are chosen on validation
only: fitted before ``T_val``, scored on cases in ``[T_val, T)``. Then every method is refitted
before ``T`` with its chosen settings and tested on cases after ``T``, same cases and same
candidates (the whole catalogue minus the user's history) for all. Two protocols:

- ``next``: per user, history = their events before the cut; targets = their first second(s)
  after it (``--next-events``; 1: the first second, all its items when several tie);
- ``rolling``: every later second of every user, the models frozen at the cut and the history
  grown with every earlier second, as the served user tower sees clicks arrive.

bench/README.md explains the figures; the JSON's ``definitions`` says the rest.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench.common import VERSIONS, machine_info, write_results
from nrtrec.core.datasets import MovieLens, load_movielens
from nrtrec.core.settings import InferenceSettings
from nrtrec.inference.training.timesplit import (
    Cases,
    cut_at_quantile,
    event_log,
    next_cases,
    rolling_cases,
    split_summary,
)

from .latency import user_tower_latency
from .methods import Fit, Grids, refit, tune, with_cut
from .plot import plot
from .scoring import SHORT_HISTORY, SLICES, case_table, report

DEFINITIONS = {
    "split": "global in time: fit on events with ts < cut; evaluate cases at or after it",
    "ties": (
        "timestamps are seconds and the order inside a second is unknown: an event in the "
        "cut's second goes wholly after the cut; a case's targets are all items of one second "
        "(a set), its history the user's events in strictly earlier seconds, so no target "
        "shares a second with a history item; a history's 'last item' is every item of its "
        "last second; training sequences keep the loader's order within a second"
    ),
    "methods": {
        "most_popular": "event counts before the cut (optionally its last window_days only)",
        "last_item_content": "cosine of MiniLM text vectors to the items of the history's "
        "last second (averaged)",
        "co_occurrence": "item pairs within `window` positions of a user's sequence, counts "
        "raw or cosine-normalised, summed over the last `last_n` items with weight "
        "decay ** (later seconds); ties fall back to popularity",
        "sasrec": "self-attention next-item model over item ids (inference/training/"
        "sequential.py), full softmax, epochs and dropout tuned",
        "two_tower": "inference/training/train.py's towers (what is served), epochs and tau "
        "tuned; scored with the numpy forward the ONNX graphs compute",
        "two_tower_prior": "the served ranking without its fresh boost: two_tower plus, for a "
        "case whose user was away longer than session_gap_s (case second minus the history's last "
        "second), weight times the app's prior of the item (recommender_app/prior.py) from "
        "its views in most_popular's chosen window, for the app's popular_pool most viewed "
        "items (0 for the others); weight and session_gap_s tuned, the towers as two_tower",
        "two_tower_served": "what the app serves: two_tower_prior (its chosen settings) plus "
        "fresh_boost for every item listed at most fresh_days before the case's second "
        "(recommender_app/fresh.py); an item is taken as listed at its first event before the "
        "cut, or at the cut when it has none (unseen: a new listing); fresh_boost and "
        "fresh_days chosen on validation as the best overall NDCG@10 among the settings whose "
        "new-items NDCG@10 reaches the best baseline's (methods.choose_fresh)",
        "two_tower_id": "only with --id-embedding, not served: the towers plus a learned id "
        "vector per item seen before the cut (inference/training/id_tower.py)",
    },
    "candidates": "all 1,682 catalogue items minus the case's history items, for every method",
    "ties_in_scores": "broken by one seeded random item order, the same for every method",
    "metrics": "Recall@10, Recall@50, NDCG@10 (binary relevance) per case; a user's cases "
    "averaged, then users; 95 % CI: percentile bootstrap over users, paired across methods",
    "slices": {
        "overall": "every case",
        "short_history": f"cases whose history holds <= {SHORT_HISTORY} events",
        "new_items": "relevant = only the targets with no event before the cut (cold items); "
        "cases without one are out",
    },
    "verdict": "per slice and metric, for the served ranking (two_tower_served): best method by "
    "mean; two_tower_served_within_best_ci95; the paired 95 % CI of two_tower_served minus the "
    "best baseline (most_popular, last_item_content, co_occurrence, sasrec): 'wins' above 0, "
    "'loses' below 0, else 'no_clear_difference'; too_few_users below 30 users. "
    "towers_alone: the same for two_tower",
    "tuning": "every knob chosen by NDCG@10 on validation cases only (tune_on); test cases "
    "are scored once, with the chosen settings refitted before the test cut",
}


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _returning_users(data: MovieLens, cases: Cases, cut: int) -> dict[str, float]:
    """Why the ``next`` protocol favours recent popularity: how long users were away, and how
    recent the films are that they come back to, against those in their histories."""
    year = datetime.fromtimestamp(cut, UTC).year
    ids = sorted(data.movies, key=int)

    def recent(rows: np.ndarray) -> float:
        return float(np.mean([(data.movies[ids[r]].year or 0) >= year - 1 for r in rows]))

    return {
        "days_since_last_event_p50": float(
            np.median([(cut - t[-1]) / 86400 for t in cases.history_ts])
        ),
        f"targets_released_{year - 1}_or_later": recent(np.concatenate(cases.targets)),
        f"history_released_{year - 1}_or_later": recent(np.concatenate(cases.history)),
    }


def run(
    val_quantile: float,
    test_quantile: float,
    next_events: int,
    tune_on: str,
    resamples: int,
    seed: int,
    grids: Grids,
    latency_calls: int,
) -> dict[str, Any]:
    from nrtrec.inference.training.text_vectors import text_vectors

    seconds: dict[str, float] = {}
    t = time.perf_counter()
    data = load_movielens()
    log = event_log(data)
    t_val, t_test = cut_at_quantile(log, val_quantile), cut_at_quantile(log, test_quantile)
    text = text_vectors(log.texts, InferenceSettings().max_tokens)
    tie_order = np.random.default_rng(seed).permutation(log.n_items)
    tie_position = np.empty_like(tie_order)
    tie_position[tie_order] = np.arange(log.n_items)
    val = {
        "next": next_cases(log, t_val, t_test, next_events),
        "rolling": rolling_cases(log, t_val, t_test),
    }
    test = {
        "next": next_cases(log, t_test, None, next_events),
        "rolling": rolling_cases(log, t_test),
    }
    seconds["data_and_text_vectors"] = time.perf_counter() - t

    typer.echo(f"tuning on validation ({tune_on}: {len(val[tune_on])} cases)")
    t = time.perf_counter()
    fit = Fit(log, text, t_val, data.version, seed)
    tuning = tune(fit, val[tune_on], tie_position, grids, say=typer.echo)
    seconds["tuning"] = time.perf_counter() - t

    typer.echo("refitting before the test cut and scoring the test cases")
    t = time.perf_counter()
    scorers, fit_seconds = refit(with_cut(fit, t_test), tuning)
    seconds["refit"] = time.perf_counter() - t
    t = time.perf_counter()
    results = {}
    for protocol, cases in test.items():
        tables = {m: case_table(s, cases, tie_position) for m, s in scorers.items()}
        results[protocol] = {"dropped": cases.dropped, **report(tables, cases, resamples, seed)}
    seconds["test_scoring"] = time.perf_counter() - t

    t = time.perf_counter()
    latency = user_tower_latency(
        scorers["two_tower"].weights, text, test["rolling"].history, latency_calls, 200
    )
    seconds["latency"] = time.perf_counter() - t
    return {
        "data": data.version,
        "definitions": DEFINITIONS,
        "split": {
            "val": {"quantile": val_quantile, "date": _date(t_val), **split_summary(log, t_val)},
            "test": {
                "quantile": test_quantile,
                "date": _date(t_test),
                **split_summary(log, t_test),
            },
            "val_window_end": _date(t_test),
            "next_test_returning_users": _returning_users(data, test["next"], t_test),
            "cases": {
                f"{part}_{p}": {"cases": len(c), "users": len(set(c.user.tolist())), **c.dropped}
                for part, cases in (("val", val), ("test", test))
                for p, c in cases.items()
            },
        },
        "tuning": {"on": tune_on, "criterion": "NDCG@10", **tuning},
        "test": results,
        "headline": {
            f"{protocol}/{name}": {
                **{
                    k: part[name]["verdict"]["ndcg@10"].get(k)
                    for k in ("best", "best_other", "outcome", "too_few_users")
                },
                "towers_alone": part[name]["towers_alone"]["ndcg@10"].get("outcome"),
            }
            for protocol, part in results.items()
            for name in SLICES
        },
        "user_tower_latency": latency,
        "timings_s": {
            **{k: round(v, 1) for k, v in seconds.items()},
            "refit_by_method": {k: round(v, 1) for k, v in fit_seconds.items()},
            "tuning_by_method": {m: round(v["seconds"], 1) for m, v in tuning.items()},
        },
    }


def main(
    out: Annotated[Path, typer.Option(help="where relevance.json and .png go")] = Path(
        "bench/results"
    ),
    val_quantile: Annotated[float, typer.Option(help="T_val: quantile of event time")] = 0.7,
    test_quantile: Annotated[float, typer.Option(help="T: quantile of event time")] = 0.8,
    next_events: Annotated[int, typer.Option(help="next protocol: target events (whole s)")] = 1,
    tune_on: Annotated[str, typer.Option(help="validation protocol: rolling or next")] = "rolling",
    resamples: Annotated[int, typer.Option(help="bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option()] = 0,
    latency_calls: Annotated[int, typer.Option(help="timed user-tower calls")] = 2000,
    quick: Annotated[bool, typer.Option(help="one setting per knob: a smoke test")] = False,
    id_embedding: Annotated[
        bool, typer.Option(help="also the experiment: the towers plus an id vector per item")
    ] = False,
) -> None:
    """Evaluate every method on a global time split; write relevance.json and relevance.png."""
    if tune_on not in ("rolling", "next"):
        raise typer.BadParameter("--tune-on is rolling or next")
    started = time.perf_counter()
    machine = machine_info((*VERSIONS, "jax", "optax", "onnxruntime"))
    grids = Grids.quick(id_embedding) if quick else Grids(id_embedding=id_embedding)
    results = run(
        val_quantile, test_quantile, next_events, tune_on, resamples, seed, grids, latency_calls
    )
    results["params"] = {
        "val_quantile": val_quantile, "test_quantile": test_quantile, "next_events": next_events,
        "tune_on": tune_on, "resamples": resamples, "seed": seed, "quick": quick,
        "latency_calls": latency_calls, "short_history_max": SHORT_HISTORY, "grids": asdict(grids),
    }  # fmt: skip
    results["machine"] = {**machine, "loadavg_end": list(os.getloadavg())}
    results["timings_s"]["total"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = write_results(out, "relevance", results, plot)
    for protocol, part in results["test"].items():
        for name, s in part.items():
            if name == "dropped":
                continue
            row = "  ".join(f"{m}={s['methods'][m]['ndcg@10']['mean']:.3f}" for m in s["methods"])
            typer.echo(f"{protocol}/{name} ({s['users']} users) NDCG@10: {row}")
    typer.echo(f"wrote {json_path} and {png_path} in {results['timings_s']['total']:.0f} s")
