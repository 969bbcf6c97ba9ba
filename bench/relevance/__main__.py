"""``python -m bench.relevance``: see ``bench.relevance.main``."""

import typer

from bench.relevance.main import main

if __name__ == "__main__":
    typer.run(main)
