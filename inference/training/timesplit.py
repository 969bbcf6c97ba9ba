"""A global time split of MovieLens-100k for offline evaluation, with timestamp ties explicit.

Why global: the per-user split of :mod:`.data` holds out each user's last events, so one user's
held-out events lie before other users' training events, and future popularity and co-views
leak into training. Here one timestamp ``cut`` divides the whole log: every model is fitted on
events strictly before it and then frozen; evaluation cases lie at or after it.

Ties. MovieLens timestamps are whole seconds and users rate many films in one second (one
submitted page); the order inside a second is unknown (the loader orders it by item id, which
means nothing). So:

- "before the cut" is ``ts < cut``: the events of the cut's own second go wholly after it;
- a case's targets are all the items of one second, as a set; its history is the user's events
  in strictly earlier seconds. A target never shares its second with a history item; the other
  items of its second are co-targets, not history;
- a history's "last item" (the content baseline) is every item of its last second;
- training sequences keep the loader's order inside a second: only fitting sees that order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from nrtrec.core.datasets import MovieLens
from nrtrec.inference.text import listing_text


@dataclass(frozen=True)
class EventLog:
    """Every event as parallel arrays, in the loader's order (time, then user, then item)."""

    user: np.ndarray  # int32 user index (users sorted by id)
    item: np.ndarray  # int32 item row (row i is item_ids[i])
    ts: np.ndarray  # int64 seconds
    item_ids: list[str]
    texts: list[str]  # the item tower's input text per row
    n_users: int

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def per_user(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(item rows, seconds) of each user's events, in log order."""
        order = np.argsort(self.user, kind="stable")  # stable: keeps time order per user
        bounds = np.searchsorted(self.user[order], np.arange(self.n_users + 1))
        return [(self.item[order[a:b]], self.ts[order[a:b]]) for a, b in itertools.pairwise(bounds)]

    def first_seen(self) -> np.ndarray:
        """Per item row, the second of its first event (int64 max for an item never seen)."""
        first = np.full(self.n_items, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(first, self.item, self.ts)
        return first


def event_log(data: MovieLens) -> EventLog:
    item_ids = sorted(data.movies, key=int)
    row = {item_id: i for i, item_id in enumerate(item_ids)}
    users = {user_id: u for u, user_id in enumerate(sorted(data.by_user, key=int))}
    texts = []
    for item_id in item_ids:
        listing = data.movies[item_id].listing(0)
        texts.append(listing_text(listing.title, listing.category, listing.aspects))
    xs = data.interactions
    return EventLog(
        user=np.array([users[x.user_id] for x in xs], np.int32),
        item=np.array([row[x.item_id] for x in xs], np.int32),
        ts=np.array([x.ts_ms // 1000 for x in xs], np.int64),
        item_ids=item_ids,
        texts=texts,
        n_users=len(users),
    )


def cut_at_quantile(log: EventLog, q: float) -> int:
    """The second at quantile ``q`` of event time; its own events fall after the cut."""
    return int(np.quantile(log.ts, q, method="lower"))


def sequences_before(log: EventLog, cut: int) -> list[np.ndarray]:
    """Per user, the item rows of their events before ``cut``, in time order (maybe empty)."""
    return [rows[ts < cut] for rows, ts in log.per_user()]


@dataclass(frozen=True)
class Cases:
    """Evaluation cases: a user at one moment, the history they had, and what came next."""

    user: np.ndarray  # [n] user index
    history: list[np.ndarray]  # item rows in time order, all in earlier seconds than targets
    history_ts: list[np.ndarray]
    targets: list[np.ndarray]  # item rows of the target second(s), minus history items
    new_targets: list[np.ndarray]  # the targets with no event before the cut (cold items)
    dropped: dict[str, int] = field(default_factory=dict)  # cases left out, by reason
    # [n] the second of the case (its targets'): how long the user was away is ``at`` minus the
    # history's last second (the served popularity prior reads that).
    at: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.user)

    def history_lengths(self) -> np.ndarray:
        return np.array([len(h) for h in self.history], np.int64)


class _Builder:
    def __init__(self, cold: np.ndarray):
        self.cold = cold  # per item row: no event before the cut
        self.user: list[int] = []
        self.history: list[np.ndarray] = []
        self.history_ts: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.at: list[int] = []
        self.dropped = {"no_history": 0, "no_targets": 0}

    def add(self, u: int, rows: np.ndarray, ts: np.ndarray, upto: int, target: np.ndarray):
        """History: ``rows[:upto]``; targets: ``target`` minus what the history holds."""
        if upto == 0:
            self.dropped["no_history"] += 1
            return
        target = np.setdiff1d(np.unique(target), rows[:upto]).astype(np.int32)
        if len(target) == 0:  # only re-views of history items: nothing to recommend
            self.dropped["no_targets"] += 1
            return
        self.user.append(u)
        self.history.append(rows[:upto])
        self.history_ts.append(ts[:upto])
        self.targets.append(target)
        self.at.append(int(ts[upto]))  # both protocols' targets start at ``upto``

    def build(self) -> Cases:
        return Cases(
            user=np.array(self.user, np.int32),
            history=self.history,
            history_ts=self.history_ts,
            targets=self.targets,
            new_targets=[t[self.cold[t]] for t in self.targets],
            dropped=self.dropped,
            at=np.array(self.at, np.int64),
        )


def next_cases(log: EventLog, cut: int, end: int | None = None, n_events: int = 1) -> Cases:
    """One case per user active in ``[cut, end)``: history = their events before ``cut``,
    targets = their first seconds after it, whole seconds until at least ``n_events`` events
    (``n_events=1``: the first second, usually one item, all of them when several tie)."""
    builder = _Builder(log.first_seen() >= cut)
    end = np.iinfo(np.int64).max if end is None else end
    for u, (rows, ts) in enumerate(log.per_user()):
        after = np.flatnonzero((ts >= cut) & (ts < end))
        if len(after) == 0:
            continue
        seconds = ts[after]
        last_second = seconds[min(n_events, len(seconds)) - 1]
        target = rows[after[seconds <= last_second]]
        builder.add(u, rows, ts, int(np.searchsorted(ts, cut)), target)
    return builder.build()


def rolling_cases(log: EventLog, cut: int, end: int | None = None) -> Cases:
    """One case per user and second in ``[cut, end)``: the models stay frozen at ``cut`` while
    the history grows with every earlier second, as the served user tower sees clicks."""
    builder = _Builder(log.first_seen() >= cut)
    end = np.iinfo(np.int64).max if end is None else end
    for u, (rows, ts) in enumerate(log.per_user()):
        for second in np.unique(ts[(ts >= cut) & (ts < end)]):
            lo, hi = np.searchsorted(ts, second, "left"), np.searchsorted(ts, second, "right")
            builder.add(u, rows, ts, int(lo), rows[lo:hi])
    return builder.build()


def last_second_items(history: np.ndarray, history_ts: np.ndarray) -> np.ndarray:
    """The items of a history's last second: its "last item", order inside a second unknown."""
    return history[history_ts == history_ts[-1]]


def split_summary(log: EventLog, cut: int) -> dict[str, int | float]:
    """How the cut divides the log, for the report."""
    before = log.ts < cut
    first = log.first_seen()
    users_before = set(log.user[before].tolist())
    users_after = set(log.user[~before].tolist())
    return {
        "cut_ts": cut,
        "events_before": int(before.sum()),
        "events_after": int((~before).sum()),
        "events_in_cut_second": int((log.ts == cut).sum()),
        "users_before": len(users_before),
        "users_after": len(users_after),
        "users_after_with_history": len(users_after & users_before),
        "items_new_after": int(((first >= cut) & (first < np.iinfo(np.int64).max)).sum()),
    }
