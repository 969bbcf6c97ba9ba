"""``nrtrec models``: train, list, load and unload encoder pairs; roll a version out, retire one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from nrtrec.cli.errors import load_settings

T = TypeVar("T")

models_app = typer.Typer(help="Encoder pairs (item and user towers): train, list, load, unload.")


def _settings():
    return load_settings()


def _repository(path: Path | None):
    from nrtrec.inference.client import model_repository
    from nrtrec.inference.repository import ModelRepository

    return ModelRepository(path or model_repository(_settings()))


@models_app.command("train")
def train(
    seed: Annotated[int, typer.Option(help="the run's only source of randomness")] = 0,
    epochs: Annotated[int, typer.Option(min=1)] = 6,
    version: Annotated[int | None, typer.Option(help="default: one past the newest")] = None,
    repository: Annotated[Path | None, typer.Option(help="default: the Triton repository")] = None,
    eval_out: Annotated[
        Path | None, typer.Option(help="write the offline evaluation here (JSON)")
    ] = None,
    register: Annotated[bool, typer.Option(help="export into the repository")] = True,
    half_life_days: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="weight training examples 0.5 ** (age / half-life) before the newest "
            "(bench.relevance chose 30 on its validation cut); default: all weigh the same",
        ),
    ] = None,
) -> None:
    """Train both towers on MovieLens-100k, evaluate on later events, register a version."""
    from rich.progress import Progress

    from nrtrec.inference.training.pipeline import train_pair
    from nrtrec.inference.training.train import TrainConfig

    settings = _settings()
    config = TrainConfig(
        seed=seed,
        epochs=epochs,
        dim=settings.inference.dim,
        max_history=settings.inference.max_history,
        half_life_days=half_life_days,
    )
    with Progress(transient=True) as bar:
        task = bar.add_task("training", total=None)

        def progress(epoch: int, step: int, steps: int) -> None:
            bar.update(
                task,
                total=steps * epochs,
                completed=epoch * steps + step + 1,
                description=f"epoch {epoch + 1}/{epochs}",
            )

        result = train_pair(
            config,
            settings.inference.max_tokens,
            repository=_repository(repository) if register else None,
            version=version,
            eval_out=eval_out,
            progress=progress,
        )
    table = {name: m for name, m in result.evaluation.items()}
    typer.echo(json.dumps({"model_version": result.version, "evaluation": table}, indent=2))


@models_app.command("list")
def list_versions(
    repository: Annotated[Path | None, typer.Option(help="default: the Triton repository")] = None,
) -> None:
    """Registered versions, with the training run of each."""
    repo = _repository(repository)
    rows = [{"model_version": v, "training": repo.training_run(v)} for v in repo.versions()]
    typer.echo(json.dumps(rows, indent=2))


def _token(settings) -> str:
    """NRTREC_TOKEN, else the local run's (``.run/token``): the one Triton was started with."""
    from nrtrec.deploy.runner import run_token

    return settings.token or run_token(settings.run_dir)


def _lifecycle():
    from nrtrec.core.access import triton_admin_headers
    from nrtrec.inference.lifecycle import ModelLifecycle

    settings = _settings()
    headers = triton_admin_headers(_token(settings))
    return ModelLifecycle(_repository(None), settings.triton.grpc_url, headers)


@models_app.command("admin-key")
def admin_key() -> None:
    """Print the key Triton's model control wants, derived from the token (for a Triton that
    nrtrec does not start: docker-compose's ``NRTREC_TRITON_ADMIN_KEY``)."""
    from nrtrec.core.access import triton_admin_key

    typer.echo(triton_admin_key(_token(_settings())))


@models_app.command("load")
def load(version: int) -> None:
    """Serve ``version`` on Triton next to the versions served now."""
    lifecycle = _lifecycle()
    lifecycle.load(version)
    typer.echo(json.dumps({"served": sorted(lifecycle.served())}))


@models_app.command("unload")
def unload(version: int) -> None:
    """Stop serving ``version`` on Triton (its files stay)."""
    lifecycle = _lifecycle()
    lifecycle.unload(version)
    typer.echo(json.dumps({"served": sorted(lifecycle.served())}))


def _progress_bar():
    """A rich bar per stage; a stage whose total is not known (0) shows a count."""
    from rich.progress import Progress

    bar = Progress(transient=True)
    tasks: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=None)
        bar.update(tasks[stage], completed=done, total=total or None)

    return bar, progress


def _run_workflow(what: str, version: int, workflow: Callable[..., T]) -> T:
    """``workflow(settings, version, lifecycle, say, progress)`` under progress bars; a step
    that a service refuses, or that finds one away, is one error line and exit status 1."""
    from nrtrec.cli.errors import fail
    from nrtrec.inference.client import InferenceError
    from nrtrec.query_node.client import QueryApiError
    from nrtrec.rollout import RolloutError
    from nrtrec.user_store import StoreError

    settings = _settings()
    bar, progress = _progress_bar()
    lifecycle = _lifecycle()
    try:
        with bar:
            return workflow(settings, version, lifecycle, bar.console.print, progress)
    except (RolloutError, QueryApiError, InferenceError, StoreError) as e:
        fail(f"{what} v{version}: {e} (rerun to resume)")
    finally:
        lifecycle.close()


@models_app.command("rollout")
def rollout(version: int) -> None:
    """Roll ``version`` out: its index built on every shard from the whole catalogue while the
    served version keeps serving, every known user given a ``version`` vector, then served.
    Resumable: a rerun after a kill continues after the last step done."""
    from nrtrec.rollout import roll_out

    report = _run_workflow("rollout", version, roll_out)
    typer.echo(
        json.dumps(
            {
                "model_version": report.model_version,
                "resumed_after": report.resumed_after,
                "items": {"indexed": report.items_indexed, "catalogue": report.catalogue_items},
                "users": {
                    "known": report.users,
                    "with_version": report.users_with_version,
                    "without_item_vectors": report.users_without_vectors,
                },
                "complete": report.complete,
            },
            indent=2,
        )
    )
    if not report.complete:
        raise typer.Exit(1)


@models_app.command("retire")
def retire(version: int) -> None:
    """Retire ``version``: held back, unloaded from Triton, its index dropped, its user vectors
    removed where a newer serving one exists; `nrtrec up` leaves it out from then on. Refused
    while it is the only serving version. Resumable; also aborts a rollout under way."""
    from nrtrec.rollout import retire as retire_version

    report = _run_workflow("retire", version, retire_version)
    users = report.users
    typer.echo(
        json.dumps(
            {
                "model_version": report.model_version,
                "serving": report.still_serving,
                "users": {
                    "with_version": users.users,
                    "removed": users.removed,
                    "kept": users.kept,
                },
            },
            indent=2,
        )
    )
