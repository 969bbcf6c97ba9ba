"""``nrtrec bulk`` and ``nrtrec replay``: the streaming package's batch commands.

``nrtrec bulk``: the bulk backfill (``nrtrec.streaming.bulk``), with a progress bar on stderr so
that stdout carries only the summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from nrtrec.cli.errors import fail, load_settings


def bulk_command(
    out_dir: Annotated[
        Path | None,
        typer.Option(help="where snapshots and bulk.json go; default <run_dir>/bulk"),
    ] = None,
    load: Annotated[
        bool,
        typer.Option(help="swap the snapshots into the query nodes (gateway.shards or local)"),
    ] = False,
    version: Annotated[
        int | None,
        typer.Option(
            min=1, help="encoder version; default inference.model_version, else the newest"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print bulk.json's content")] = False,
) -> None:
    """Embed the whole catalogue (listings up to now) and build one index snapshot per shard.

    Delta mode continues from the listings offsets in <out-dir>/bulk.json, and the query nodes
    replay item-deltas from each snapshot's offsets, so no change in between is lost."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from nrtrec.inference.errors import InferenceError
    from nrtrec.streaming.bulk import BulkError, load_snapshots, run_bulk

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = load_settings()
    console = Console(stderr=True)
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            tasks: dict[str, int] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done, total=total)

            manifest = run_bulk(settings, out_dir, version, progress)
        loaded = load_snapshots(settings, manifest) if load else []
    except (BulkError, InferenceError) as e:
        fail(e)

    if as_json:
        typer.echo(manifest.model_dump_json())
        return
    typer.echo(
        f"bulk: {manifest.items} items (encoder v{manifest.model_version}), "
        f"{manifest.deleted} deleted, {manifest.dead_letters} dead letter(s), "
        f"{manifest.seconds:.1f} s"
    )
    typer.echo(f"bulk: listings offsets {json.dumps(manifest.listings_offsets)}")
    for shard in manifest.shards:
        typer.echo(f"bulk: shard {shard.shard}: {shard.count} items in {shard.snapshot_path}")
    for node in loaded:
        typer.echo(f"bulk: {node.url} serves shard {node.shard} ({node.count} items)")


def replay_command(
    rate: Annotated[float | None, typer.Option(help="clicks per second; default settings")] = None,
    clicks: Annotated[int | None, typer.Option(help="replay only the first N clicks")] = None,
    listings: Annotated[bool, typer.Option(help="replay the catalogue first")] = False,
    stay: Annotated[
        bool, typer.Option(help="keep running once done (as `nrtrec up` runs it)")
    ] = False,
) -> None:
    """Replay MovieLens-100k: listings (optional), then time-ordered clicks, with progress."""
    import time

    from rich.progress import Progress

    from nrtrec.streaming.replay import replay_clicks, replay_listings

    settings = load_settings()
    with Progress() as bar:
        if listings:
            task = bar.add_task("listings", total=None)
            replay_listings(settings, lambda d, t: bar.update(task, completed=d, total=t))
        task = bar.add_task("clicks", total=None)
        replay_clicks(
            settings,
            rate or settings.streaming.replay_rate,
            clicks,
            lambda d, t: bar.update(task, completed=d, total=t),
            # Under supervision a restart goes on where the killed one stopped.
            settings.run_dir / "replay.position" if stay else None,
        )
    typer.echo("replay: done")
    while stay:  # `nrtrec up` counts a live stack by its processes; `down` stops this one
        time.sleep(3600)


jobs_app = typer.Typer(help="The streaming jobs on the Flink cluster.")


@jobs_app.command("keep")
def jobs_keep() -> None:
    """Keep both streaming jobs running: submit one that is gone from its newest checkpoint
    (`nrtrec up` runs this under supervision)."""
    from nrtrec.core import logs
    from nrtrec.deploy.services.flink import FlinkService
    from nrtrec.streaming.submit import keep_jobs

    settings = load_settings()
    logs.configure(settings.log_format)
    keep_jobs(settings, FlinkService(settings))


@jobs_app.command("ensure")
def jobs_ensure() -> None:
    """Submit each streaming job that is not running or restarting, once."""
    from nrtrec.deploy.services.flink import FlinkService
    from nrtrec.streaming.submit import ensure_jobs

    settings = load_settings()
    for name, job_id in ensure_jobs(settings, FlinkService(settings), typer.echo).items():
        typer.echo(f"{name}: {job_id}")
