"""The `nrtrec` command line."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from nrtrec import logs
from nrtrec.inference.cli import models_app
from nrtrec.settings import Settings
from nrtrec.streaming.cli import bulk_command, replay_command

app = typer.Typer(
    help="nrtrec: near-real-time recommendations. Settings come from NRTREC_* variables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="JSON Schema files generated from the topic records.")
app.add_typer(schemas_app, name="schemas")
app.add_typer(models_app, name="models")
app.command("bulk")(bulk_command)
app.command("replay")(replay_command)


def _runner():
    from nrtrec.deploy import LocalRunner

    return LocalRunner(Settings())


def _fail(error: Exception) -> None:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command()
def up() -> None:
    """Start every service on 127.0.0.1 (installs on first use); a second `up` is a no-op."""
    from nrtrec.deploy import DeployError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Health probes poll every half second; their request lines are noise here.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    runner = _runner()
    try:
        started = runner.up(on_progress=lambda m: typer.echo(f"nrtrec: {m}"))
    except DeployError as e:
        _fail(e)
    if started:
        try:
            _start_pipeline(runner, lambda m: typer.echo(f"nrtrec: {m}"))
        except Exception as e:
            _fail(e)
    typer.echo("nrtrec: up" if started else "nrtrec: already up, nothing to do")
    typer.echo(f"nrtrec: bearer token for writes in {runner.settings.run_dir / 'token'}")
    _print_status(runner.status(), as_json=False)


def _start_pipeline(runner, on_progress) -> None:
    """Encoders, indexes and streaming jobs, then the demo data: listings now, clicks paced."""
    from rich.progress import Progress

    from nrtrec.deploy.pipeline import ensure_indexes, ensure_jobs, ensure_models
    from nrtrec.deploy.services.base import Process
    from nrtrec.deploy.services.flink import FlinkService
    from nrtrec.settings import settings_env
    from nrtrec.streaming.replay import replay_listings

    settings = runner.settings
    versions = ensure_models(settings, on_progress)
    ensure_indexes(settings, versions)
    ensure_jobs(settings, FlinkService(settings), on_progress)
    with Progress() as bar:
        task = bar.add_task("replaying MovieLens listings", total=None)
        replay_listings(settings, lambda d, t: bar.update(task, completed=d, total=t))
    rate = settings.streaming.replay_rate
    on_progress(f"replaying MovieLens clicks at {rate:g}/s (log: {settings.run_dir}/logs)")
    argv = [str(Path(sys.executable).with_name("nrtrec")), "replay", "--stay"]
    runner.supervisor.start("replay", Process("replay", argv, env=settings_env(settings)))


@app.command()
def down() -> None:
    """Stop everything `up` started; no process is left behind."""
    stopped = _runner().down()
    typer.echo(f"nrtrec: stopped {stopped} process(es)")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False,
) -> None:
    """Each service with its url, pid and health."""
    _print_status(_runner().status(), as_json)


def _print_status(statuses, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([asdict(s) for s in statuses]))
        return
    for s in statuses:
        health = "healthy" if s.healthy else ("unhealthy" if s.pid else "stopped")
        typer.echo(f"{s.name:<12} {health:<10} pid={s.pid or '-':<8} {s.url}")


@app.command("query-node")
def query_node(
    host: Annotated[str | None, typer.Option(help="default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default 8100")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="default <run_dir>/query-node")] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="NRTREC_QUERY_NODE_TOKEN",
            help="bearer token for writes; none: open",
        ),
    ] = None,
    kafka: Annotated[
        str | None, typer.Option(help="bootstrap servers: apply item-deltas from this Kafka")
    ] = None,
    partitions: Annotated[
        str | None, typer.Option(help="item-deltas partitions this shard owns (0,1); default all")
    ] = None,
    group: Annotated[
        str | None, typer.Option(help="consumer group; default one per partition set and replica")
    ] = None,
) -> None:
    """Run one query node alone (no Kafka needed); its API is open without --token.

    With --kafka it also applies item-deltas (of --partitions, or the whole topic)."""
    import uvicorn

    from nrtrec.query_node.http import create_app

    settings = Settings()
    logs.configure(settings.log_format)
    given: dict[str, object] = {"host": host, "port": port, "data_dir": data_dir}
    given["consumer_group"] = group
    if kafka is not None:
        given.update(consume_deltas=True, kafka_bootstrap=kafka)
    if partitions is not None:
        try:
            given["partitions"] = sorted({int(p) for p in partitions.split(",") if p.strip()})
        except ValueError:
            _fail(ValueError(f"--partitions takes numbers separated by commas, got {partitions!r}"))
    node = settings.query_node.model_copy(update={k: v for k, v in given.items() if v is not None})
    settings = settings.model_copy(update={"query_node": node, "token": token})
    uvicorn.run(create_app(settings), host=node.host, port=node.port, access_log=node.access_log)


@app.command("gateway")
def gateway(
    shard: Annotated[
        list[str] | None,
        typer.Option(help="one shard's replica URLs, comma-separated; repeat once per shard"),
    ] = None,
    host: Annotated[str | None, typer.Option(help="default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default 8090")] = None,
    num_partitions: Annotated[
        int | None, typer.Option(help="item-deltas' partition count; default kafka.partitions")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="NRTREC_GATEWAY_TOKEN",
            help="bearer token for writes; none: open",
        ),
    ] = None,
    upstream_token: Annotated[
        str | None, typer.Option(help="token sent to the query nodes; default --token")
    ] = None,
) -> None:
    """Run the gateway: the query-node API over shards (`--shard URL[,URL...]` per shard)."""
    import uvicorn

    from nrtrec.query_node.gateway import create_gateway_app

    settings = Settings()
    logs.configure(settings.log_format)
    given: dict[str, object] = {
        "host": host,
        "port": port,
        "num_partitions": num_partitions,
        "upstream_token": upstream_token,
    }
    if shard:
        given["shards"] = [[u.strip() for u in s.split(",") if u.strip()] for s in shard]
    gw = settings.gateway.model_copy(update={k: v for k, v in given.items() if v is not None})
    settings = settings.model_copy(update={"gateway": gw, "token": token})
    try:
        api = create_gateway_app(settings)
    except ValueError as e:
        _fail(e)
    uvicorn.run(api, host=gw.host, port=gw.port, access_log=gw.access_log)


@app.command("app")
def recommender_app(
    host: Annotated[str | None, typer.Option(help="default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default 8200")] = None,
    gateway_url: Annotated[
        str | None, typer.Option(help="the gateway (or one query node); default the local gateway")
    ] = None,
    kafka: Annotated[
        str | None, typer.Option(help="bootstrap servers for click events; default kafka.*")
    ] = None,
) -> None:
    """Run the recommender app: recommendations, similar items, click tracking, homepage.

    The user-vector store is settings.user_store.backend (NRTREC_USER_STORE__BACKEND)."""
    import uvicorn

    from nrtrec.recommender_app import create_app

    settings = Settings()
    logs.configure(settings.log_format)
    given: dict[str, object] = {
        "host": host,
        "port": port,
        "gateway_url": gateway_url,
        "kafka_bootstrap": kafka,
    }
    cfg = settings.app.model_copy(update={k: v for k, v in given.items() if v is not None})
    settings = settings.model_copy(update={"app": cfg})
    uvicorn.run(create_app(settings), host=cfg.host, port=cfg.port, access_log=cfg.access_log)


@schemas_app.command("export")
def schemas_export() -> None:
    """Write schemas/json/*.schema.json from the models."""
    from nrtrec.schemas import json_schema

    for path in json_schema.write():
        typer.echo(str(path))


@schemas_app.command("check")
def schemas_check() -> None:
    """Fail when a JSON Schema file is missing or out of date."""
    from nrtrec.schemas import json_schema

    stale = json_schema.stale()
    if stale:
        _fail(ValueError(f"stale schema files: {', '.join(stale)}; run `nrtrec schemas export`"))
    typer.echo("schemas are current")
