"""``nrtrec report experiment``: an A/B experiment's numbers per arm, read from the topics."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from nrtrec.cli.errors import fail, load_settings

if TYPE_CHECKING:
    from nrtrec.recommender_app.experiment import ExperimentReport

report_app = typer.Typer(help="Reports read from the topics.", no_args_is_help=True)


@report_app.command("experiment")
def experiment(
    bootstrap: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers; default app.kafka_bootstrap, else kafka.*"),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--experiment",
            help="experiment name; default experiment.name; with neither, the lists served "
            "outside any experiment (arm 'default')",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="seconds to read both topics to their end", min=1.0)
    ] = 60.0,
    confidence: Annotated[
        float, typer.Option(help="of the CTR interval (Wilson)", min=0.5, max=0.999)
    ] = 0.95,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Per arm: impressions, clicks, CTR with its interval, the share of clicks on recommended
    items. Reads `impressions` and `clicks` from the start to where each partition ended when
    it began, then stops."""
    from nrtrec.recommender_app.experiment import ReportError, experiment_report

    settings = load_settings()
    name = name or settings.experiment.name
    # The configured arms come first (with zeros when nothing was served under one).
    arms = (
        [(a.name, a.model_version) for a in settings.experiment.arms]
        if name is not None and name == settings.experiment.name
        else []
    )
    try:
        report = experiment_report(
            bootstrap or settings.app.kafka_bootstrap or settings.kafka.bootstrap_servers,
            settings.topics.impressions,
            settings.topics.clicks,
            name,
            arms=arms,
            confidence=confidence,
            timeout_s=timeout,
        )
    except ReportError as e:
        fail(e)
    if as_json:
        typer.echo(json.dumps(report.to_json()))
        return
    for line in table(report, versions_known=bool(arms)):
        typer.echo(line)


def table(report: ExperimentReport, versions_known: bool) -> list[str]:
    """The report as lines of text: a summary, then one row per arm."""
    name = report.experiment
    title = f"experiment {name!r}" if name else "outside any experiment"
    lines = [
        f"{title}: {report.impressions_read} impressions and {report.clicks_read} clicks read"
        f" ({report.unreadable} unreadable, {report.clicks_unmatched} clicks naming no list of it)",
        f"{'arm':<16} {'version':>8} {'users':>7} {'impressions':>11} {'clicked':>8} {'CTR':>7} "
        f"{f'{report.confidence:.0%} CI':>17} {'clicks':>7} {'on recs':>16}",
    ]
    for arm in report.arms:
        version = "control" if arm.model_version is None else f"v{arm.model_version}"
        if not versions_known:
            version = "-"
        ctr = "-" if arm.ctr is None else f"{arm.ctr:.1%}"
        interval = "-" if arm.ctr_low is None else f"[{arm.ctr_low:.1%}, {arm.ctr_high:.1%}]"
        share = "-" if arm.recommended_share is None else f"{arm.recommended_share:.1%}"
        lines.append(
            f"{arm.arm:<16} {version:>8} {arm.users:>7} {arm.impressions:>11} {arm.clicked:>8} "
            f"{ctr:>7} {interval:>17} {arm.clicks:>7} "
            f"{f'{arm.clicks}/{arm.user_clicks} {share}':>16}"
        )
    return lines
