"""A user's recent items, as the user-embedding job keeps them in keyed state."""

from __future__ import annotations

import json
from dataclasses import dataclass

from nrtrec.schemas import ClickEvent


@dataclass(frozen=True)
class History:
    # (item_id, ts) most recent first, each item once.
    items: tuple[tuple[str, int], ...] = ()

    @property
    def item_ids(self) -> list[str]:
        return [item for item, _ in self.items]

    @property
    def newest_ts(self) -> int:
        return self.items[0][1] if self.items else 0

    def with_click(self, click: ClickEvent, max_items: int) -> History:
        """The history after ``click``: its item moves to where its time puts it.

        Events can arrive slightly out of order (producers, partitions), so placement is by
        ``ts``, not by arrival; a repeat view keeps the item once, at its newest time.
        """
        others = [(item, ts) for item, ts in self.items if item != click.item_id]
        previous = [ts for item, ts in self.items if item == click.item_id]
        ts = max([click.ts, *previous])
        merged = sorted([(click.item_id, ts), *others], key=lambda x: x[1], reverse=True)
        return History(tuple(merged[:max_items]))

    def to_json(self) -> str:
        return json.dumps(self.items)

    @classmethod
    def from_json(cls, text: str | None) -> History:
        if not text:
            return cls()
        return cls(tuple((str(item), int(ts)) for item, ts in json.loads(text)))
