"""MovieLens-100k from the ``recbole`` wheel, as nrtrec's demo catalogue and click stream.

The 1,682 titles become listings (genres are the category and aspects) and the 100k ratings
become time-ordered ``view`` clicks. MovieLens has no prices or locations; the demo derives
them from the item id with a stable hash so that attribute filters have something to act on.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from nrtrec.schemas import Action, ClickEvent, ListingEvent, ListingOp

#: The recbole release whose ``dataset_example/ml-100k`` this reader knows.
DATA_VERSION = "ml-100k (recbole 1.2.1 dataset_example)"
LOCATIONS = ("US", "CA", "GB", "DE", "FR")


class DataMissing(RuntimeError):
    """The wheel that carries the data is not installed."""


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    ts_ms: int


@dataclass(frozen=True)
class Movie:
    item_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]

    @property
    def category(self) -> str:
        return self.genres[0] if self.genres else "unknown"

    @property
    def price(self) -> float:
        # A stable pseudo-price in [2, 40): the same id gives the same price on every machine.
        h = int.from_bytes(hashlib.blake2b(self.item_id.encode(), digest_size=4).digest(), "big")
        return round(2 + (h % 3800) / 100, 2)

    @property
    def location(self) -> str:
        h = hashlib.blake2b(b"loc:" + self.item_id.encode(), digest_size=2).digest()
        return LOCATIONS[int.from_bytes(h, "big") % len(LOCATIONS)]

    def listing(self, ts_ms: int, op: ListingOp = ListingOp.UPSERT) -> ListingEvent:
        if op is ListingOp.DELETE:
            event_id = f"ml-listing-{self.item_id}-{ts_ms}-d"
            return ListingEvent(event_id=event_id, op=op, item_id=self.item_id, ts=ts_ms)
        aspects: dict[str, object] = {"genres": list(self.genres)}
        if self.year is not None:
            aspects["year"] = self.year
        return ListingEvent(
            event_id=f"ml-listing-{self.item_id}-{ts_ms}",
            op=op,
            item_id=self.item_id,
            ts=ts_ms,
            title=self.title,
            category=self.category,
            aspects=aspects,
            price=self.price,
            location=self.location,
        )


@dataclass(frozen=True)
class MovieLens:
    movies: dict[str, Movie]
    interactions: list[Interaction]  # sorted by time, then user, then item

    @property
    def version(self) -> str:
        return DATA_VERSION

    def listings(self, ts_ms: int = 0) -> list[ListingEvent]:
        return [m.listing(ts_ms) for m in self.movies.values()]

    def clicks(self) -> list[ClickEvent]:
        return [
            ClickEvent(
                event_id=f"ml-click-{i}",
                user_id=x.user_id,
                item_id=x.item_id,
                action=Action.VIEW,
                ts=x.ts_ms,
            )
            for i, x in enumerate(self.interactions)
        ]

    @cached_property
    def by_user(self) -> dict[str, list[Interaction]]:
        users: dict[str, list[Interaction]] = {}
        for x in self.interactions:
            users.setdefault(x.user_id, []).append(x)
        return users


def data_dir() -> Path:
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataMissing(
            "MovieLens-100k comes from the recbole wheel, which is not installed: "
            "`pip install --no-deps recbole==1.2.1` (deploy/setup.sh does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").is_file():
        raise DataMissing(f"no ml-100k files under {path}; reinstall recbole==1.2.1")
    return path


def load_movielens(path: Path | None = None) -> MovieLens:
    path = path or data_dir()
    movies: dict[str, Movie] = {}
    with open(path / "ml-100k.item", encoding="utf-8", errors="replace") as f:
        next(f)  # header: item_id:token movie_title:token_seq release_year:token class:token_seq
        for line in f:
            item_id, title, year, genres = line.rstrip("\n").split("\t")
            movies[item_id] = Movie(
                item_id=item_id,
                title=title.strip() or f"item {item_id}",
                year=int(year) if year.isdigit() else None,
                genres=tuple(g for g in genres.split() if g != "unknown"),
            )
    interactions = []
    with open(path / "ml-100k.inter", encoding="utf-8") as f:
        next(f)  # user_id:token item_id:token rating:float timestamp:float
        for line in f:
            user_id, item_id, _rating, ts = line.rstrip("\n").split("\t")
            interactions.append(Interaction(user_id, item_id, int(float(ts)) * 1000))
    interactions.sort(key=lambda x: (x.ts_ms, int(x.user_id), int(x.item_id)))
    return MovieLens(movies=movies, interactions=interactions)
