"""How every ``nrtrec`` command fails: one red line on stderr, exit status 1, no trace."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(error: Exception | str) -> NoReturn:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)
