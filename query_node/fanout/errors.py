"""What the fan-out raises: a shard that no replica answered, shards that failed a request
that needs them, and a node's 4xx passed through."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

FailureKind = Literal["timeout", "unavailable", "bad_gateway"]
_STATUS_OF_KIND: dict[FailureKind, int] = {"bad_gateway": 502, "unavailable": 503, "timeout": 504}
_CODE_OF_KIND: dict[FailureKind, str] = {
    "bad_gateway": "bad_gateway",
    "unavailable": "shard_unavailable",
    "timeout": "shard_timeout",
}


@dataclass(frozen=True)
class Attempt:
    """One failed call to a replica."""

    url: str
    kind: FailureKind
    reason: str

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


@dataclass(frozen=True)
class Answer:
    """A node's HTTP answer, read in full."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


class ShardFailed(Exception):
    """No replica of one shard answered (a 4xx is an answer; see ``ShardRejected``)."""

    def __init__(self, shard: int, attempts: Sequence[Attempt], what: str = "answered"):
        self.shard = shard
        self.attempts = list(attempts)
        tried = "; ".join(map(str, self.attempts)) or "no replica to try"
        super().__init__(f"shard {shard}: no replica {what} ({tried})")

    @property
    def kind(self) -> FailureKind:
        kinds = {a.kind for a in self.attempts}
        if "bad_gateway" in kinds:
            return "bad_gateway"
        return "timeout" if "timeout" in kinds else "unavailable"


class FanOutError(Exception):
    """An answer the fan-out could not put together; ``status`` and ``code`` are what the
    gateway answers its caller."""

    status = 502
    code = "bad_gateway"


class ShardsFailed(FanOutError):
    """One or more shards failed a request that needs them all (a write, or every shard of a
    search); answered 502, 503 or 504."""

    def __init__(self, failures: Sequence[ShardFailed], note: str = ""):
        self.failures = sorted(failures, key=lambda f: f.shard)
        super().__init__("; ".join(str(f) for f in self.failures) + (f"; {note}" if note else ""))

    @property  # type: ignore[override]
    def status(self) -> int:
        return _STATUS_OF_KIND[self.failures[0].kind]

    @property  # type: ignore[override]
    def code(self) -> str:
        return _CODE_OF_KIND[self.failures[0].kind]


class ShardRejected(Exception):
    """A node answered 4xx: the caller's mistake, passed through with the node's reason."""

    def __init__(self, shard: int, response: Answer):
        self.shard = shard
        self.response = response
        # Set when other shards took their part of the same write.
        self.note = ""
        super().__init__(f"shard {shard} answered {response.status_code}: {response.text[:200]}")


class MetricUnknown(FanOutError):
    """No shard lists the index version, so its hits cannot be ordered."""

    status = 502
    code = "metric_unknown"
