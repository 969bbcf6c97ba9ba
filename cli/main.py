"""The ``nrtrec`` command line: the local runner's verbs, and the other command groups."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Annotated

import typer

from nrtrec.cli.errors import fail, load_settings
from nrtrec.cli.models import models_app
from nrtrec.cli.report import report_app
from nrtrec.cli.services import register_service_commands
from nrtrec.cli.streaming import bulk_command, jobs_app, replay_command

app = typer.Typer(
    help="nrtrec: near-real-time recommendations. Settings come from NRTREC_* variables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="JSON Schema files generated from the topic records.")
app.add_typer(schemas_app, name="schemas")
app.add_typer(models_app, name="models")
app.add_typer(jobs_app, name="jobs")
app.add_typer(report_app, name="report")
app.command("bulk")(bulk_command)
app.command("replay")(replay_command)
register_service_commands(app)


def _runner():
    from nrtrec.deploy import LocalRunner

    return LocalRunner(load_settings())


@app.command()
def up() -> None:
    """Start every service on 127.0.0.1 (installs on first use); a second `up` is a no-op."""
    from nrtrec.cli.up import start_pipeline
    from nrtrec.deploy import DeployError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Health probes poll every half second; their request lines are noise here.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    runner = _runner()
    say = lambda m: typer.echo(f"nrtrec: {m}")  # noqa: E731
    try:
        started = runner.up(on_progress=say)
    except DeployError as e:
        fail(e)
    try:
        # Each step finds what is there already and does only what is missing.
        start_pipeline(runner, say if started else lambda m: None)
    except Exception as e:
        fail(e)
    typer.echo("nrtrec: up" if started else "nrtrec: already up, nothing to do")
    typer.echo(f"nrtrec: bearer token for writes in {runner.settings.run_dir / 'token'}")
    _print_status(runner.status(), as_json=False)


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
    width = max([13, *(len(s.name) for s in statuses)])  # flink-taskmanager-0 is wider
    for s in statuses:
        health = "healthy" if s.healthy else ("unhealthy" if s.pid else "stopped")
        typer.echo(
            f"{s.name:<{width}} {health:<10} pid={s.pid or '-':<8} restarts={s.restarts:<3} {s.url}"
        )


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
        fail(ValueError(f"stale schema files: {', '.join(stale)}; run `nrtrec schemas export`"))
    typer.echo("schemas are current")
