"""``nrtrec query-node``, ``nrtrec gateway``, ``nrtrec app``: one service in the foreground.

Each reads ``Settings()`` (``NRTREC_*`` variables, or the file a parent process wrote for it),
and an option given on the command line overrides its setting; an option left out changes
nothing, so ``NRTREC_TOKEN`` alone protects a node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from nrtrec.cli.errors import fail, load_settings
from nrtrec.core import logs
from nrtrec.core.settings import Settings
from nrtrec.core.threads import limit_blas_threads


def _given(group: BaseModel, **options: Any) -> Any:
    """``group`` with the options that were given (not None) in place of its settings."""
    return group.model_copy(update={k: v for k, v in options.items() if v is not None})


def _start(settings: Settings) -> None:
    """What every service process sets up first: its logs and its BLAS threads."""
    logs.configure(settings.log_format)
    limit_blas_threads(settings.blas_threads)


def _token(settings: Settings, token: str | None) -> Settings:
    if token is None:
        return settings
    if not token.strip():
        fail("--token is empty: give a secret, or leave the option out for an open API")
    return settings.model_copy(update={"token": token})


def query_node(
    host: Annotated[str | None, typer.Option(help="default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default 8100")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="default <run_dir>/query-node")] = None,
    token: Annotated[
        str | None, typer.Option(help="bearer token for writes; default NRTREC_TOKEN; none: open")
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
    """Run one query node alone (no Kafka needed); its API is open without a token.

    With --kafka it also applies item-deltas (of --partitions, or the whole topic)."""
    import uvicorn

    from nrtrec.query_node import create_app

    settings = load_settings()
    _start(settings)
    parts = None
    if partitions is not None:
        try:
            parts = sorted({int(p) for p in partitions.split(",") if p.strip()})
        except ValueError:
            fail(f"--partitions takes numbers separated by commas, got {partitions!r}")
    node = _given(
        settings.query_node,
        host=host,
        port=port,
        data_dir=data_dir,
        consumer_group=group,
        partitions=parts,
        **({"consume_deltas": True, "kafka_bootstrap": kafka} if kafka is not None else {}),
    )
    settings = _token(settings.model_copy(update={"query_node": node}), token)
    app = create_app(settings, freeze_heap=True)
    uvicorn.run(app, host=node.host, port=node.port, access_log=node.access_log)


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
        str | None, typer.Option(help="bearer token for writes; default NRTREC_TOKEN; none: open")
    ] = None,
    upstream_token: Annotated[
        str | None, typer.Option(help="token sent to the query nodes; default the token")
    ] = None,
) -> None:
    """Run the gateway: the query-node API over shards (`--shard URL[,URL...]` per shard)."""
    import uvicorn

    from nrtrec.query_node import create_gateway_app

    settings = load_settings()
    _start(settings)
    gw = _given(
        settings.gateway,
        host=host,
        port=port,
        num_partitions=num_partitions,
        upstream_token=upstream_token,
        shards=_shard_list(shard),
    )
    settings = _token(settings.model_copy(update={"gateway": gw}), token)
    try:
        api = create_gateway_app(settings, freeze_heap=True)
    except ValueError as e:
        fail(e)
    uvicorn.run(api, host=gw.host, port=gw.port, access_log=gw.access_log)


def recommender_app(
    host: Annotated[str | None, typer.Option(help="default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default 8200")] = None,
    gateway_url: Annotated[
        str | None, typer.Option(help="the gateway (or one query node); default the local gateway")
    ] = None,
    kafka: Annotated[
        str | None,
        typer.Option(help="bootstrap servers of clicks and impressions; default kafka.*"),
    ] = None,
    shard: Annotated[
        list[str] | None,
        typer.Option(
            help="read from the shards directly: one shard's replica URLs, comma-separated; "
            "repeat once per shard (app.query_path auto)"
        ),
    ] = None,
    num_partitions: Annotated[
        int | None, typer.Option(help="item-deltas' partition count; default kafka.partitions")
    ] = None,
) -> None:
    """Run the recommender app: recommendations, similar items, click tracking, homepage.

    The user-vector store is settings.user_store.backend (NRTREC_USER_STORE__BACKEND). Reads go
    to the shards themselves when they are named (--shard, gateway.shards), else the gateway."""
    import uvicorn

    from nrtrec.recommender_app import create_app

    settings = load_settings()
    _start(settings)
    cfg = _given(settings.app, host=host, port=port, kafka_bootstrap=kafka)
    gw = _given(
        settings.gateway,
        client_url=gateway_url,
        shards=_shard_list(shard),
        num_partitions=num_partitions,
    )
    settings = settings.model_copy(update={"app": cfg, "gateway": gw})
    app = create_app(settings, freeze_heap=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, access_log=cfg.access_log)


def _shard_list(shard: list[str] | None) -> list[list[str]] | None:
    """``--shard URL[,URL...]`` repeated: per shard, its replicas' URLs."""
    if not shard:
        return None
    return [[u.strip() for u in s.split(",") if u.strip()] for s in shard]


def register_service_commands(app: typer.Typer) -> None:
    app.command("query-node")(query_node)
    app.command("gateway")(gateway)
    app.command("app")(recommender_app)
