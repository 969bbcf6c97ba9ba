"""Errors of the query node beyond the index's own (``nrtrec.ann.errors``): which indexes it
serves. Each names the caller's mistake; ``code`` is what HTTP answers."""

from __future__ import annotations


class QueryNodeError(Exception):
    """Base of the node's own errors."""

    code = "query_node_error"


class IndexNotFound(QueryNodeError):
    code = "index_not_found"

    def __init__(self, name: str, model_version: int | None = None):
        self.name, self.model_version = name, model_version
        where = f"index {name!r}" if model_version is None else f"index {name!r} version"
        which = "" if model_version is None else f" {model_version}"
        super().__init__(f"{where}{which} does not exist")


class IndexExists(QueryNodeError):
    code = "index_exists"

    def __init__(self, name: str, model_version: int, reason: str = ""):
        self.name, self.model_version = name, model_version
        super().__init__(
            f"index {name!r} version {model_version} already exists"
            + (f" with another spec: {reason}" if reason else "")
        )


class BatchTooLarge(QueryNodeError):
    """More items in one call than ``query_node.max_batch`` (answered 413)."""

    code = "too_large"

    @classmethod
    def check(cls, n: int, limit: int) -> None:
        if n > limit:
            raise cls(f"at most {limit} items per call, got {n}; split the batch")
