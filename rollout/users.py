"""The user passes of a rollout and a retire, over every user the store knows.

A rollout writes each user a vector of the new version from the recent items the store holds,
stamped with the ``source_ts`` of the user's newest vector: a click the user job writes later is
newer and wins, and a pass redone after a kill writes nothing twice (a user whose new-version
vector is as new as their newest is skipped). The recent items themselves are left alone, since
the user job may have written newer ones meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nrtrec.schemas import UserVectors
from nrtrec.streaming.history import History
from nrtrec.streaming.user_vectors import UserVectorWriter
from nrtrec.user_store import UserVectorStore

# progress(stage, done, total): total 0 while it is not known.
Progress = Callable[[str, int, int], None]


@dataclass
class UsersPass:
    users: int = 0  # records read
    written: int = 0  # vectors of the version written in this pass
    current: int = 0  # already had a vector of the version as new as their newest
    # None of their recent items has a vector in the version's index: nothing to encode.
    without_vectors: int = 0

    @property
    def with_version(self) -> int:
        return self.written + self.current


@dataclass
class DropPass:
    users: int = 0  # users that had a vector of the version
    removed: int = 0  # a vector of the version removed (a newer serving one was there)
    kept: int = 0  # had the version but nothing newer serving: kept


def _newest_ts(record: UserVectors) -> int:
    return max(v.source_ts for v in record.versions)


def is_current(record: UserVectors, version: int) -> bool:
    """The user has a ``version`` vector made from (at least) their newest history."""
    mine = record.newest(version)
    return mine is not None and mine.source_ts >= _newest_ts(record)


def embed_users(
    store: UserVectorStore,
    writer: UserVectorWriter,
    version: int,
    *,
    max_history: int,
    batch: int,
    progress: Progress,
) -> UsersPass:
    """A ``version`` vector for every user that lacks a current one."""
    done = UsersPass()
    for ids in store.user_ids(batch):
        histories: dict[str, History] = {}
        for user_id in ids:
            record = store.get(user_id)
            if record is None or not record.versions:
                continue  # expired since it was listed
            done.users += 1
            if is_current(record, version):
                done.current += 1
            elif not record.recent_items:
                done.without_vectors += 1
            else:
                ts = _newest_ts(record)
                items = record.recent_items[:max_history]
                histories[user_id] = History(tuple((item, ts) for item in items))
        report = writer.write_version(histories, version, replace_recent=False, create_users=False)
        done.written += report.written
        # Stale: the user job wrote a newer vector of this version meanwhile (or the user
        # was deleted: nothing to give a vector to).
        done.current += report.stale
        done.without_vectors += report.without_vectors
        progress(f"users (v{version})", done.users, 0)
    return done


def drop_user_vectors(
    store: UserVectorStore,
    version: int,
    *,
    serving: set[int],
    batch: int,
    progress: Progress,
) -> DropPass:
    """Remove every user's ``version`` vector where the user has one of a newer ``serving``
    version to be answered from (a newer one still building replaces nothing yet)."""
    done = DropPass()
    newer = {v for v in serving if v > version}
    for ids in store.user_ids(batch):
        for user_id in ids:
            record = store.get(user_id)
            if record is None or record.newest(version) is None:
                continue
            done.users += 1
            replaced = any(record.newest(v) is not None for v in newer)
            if replaced and store.drop_version(user_id, version):
                done.removed += 1
            else:
                done.kept += 1
        progress(f"users (drop v{version})", done.users, 0)
    return done
