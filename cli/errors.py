"""How every ``nrtrec`` command fails: one red line on stderr, exit status 1, no trace; and the
one way a command reads its settings, failing so when they are wrong."""

from __future__ import annotations

from typing import NoReturn

import typer
from pydantic import ValidationError

from nrtrec.core.settings import Settings


def fail(error: Exception | str) -> NoReturn:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def load_settings() -> Settings:
    """``Settings()``, or a clear error naming each bad setting (an empty ``NRTREC_TOKEN``)."""
    try:
        return Settings()
    except ValidationError as e:
        problems = [
            f"{'.'.join(map(str, err['loc'])) or 'settings'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        ]
        fail("invalid settings: " + "; ".join(problems))
