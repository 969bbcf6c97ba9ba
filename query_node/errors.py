"""Errors of the query node. Each names the caller's mistake; ``code`` is what HTTP answers."""

from __future__ import annotations


class QueryNodeError(Exception):
    """Base of every query-node error."""

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


class InvalidSpec(QueryNodeError):
    """An index spec that hnswlib cannot build (bad name, dimension, metric, parameters)."""

    code = "invalid_spec"


class InvalidVector(QueryNodeError):
    """Wrong dimension, NaN or infinity, or a zero vector where cosine needs a direction."""

    code = "invalid_vector"


class InvalidFilter(QueryNodeError):
    """A filter outside the grammar; the message says which attribute and why."""

    code = "invalid_filter"


class OutOfRange(QueryNodeError):
    """A search parameter (k, ef) or a batch size outside the node's limits."""

    code = "out_of_range"


class SnapshotError(QueryNodeError):
    """A snapshot that cannot be written or read back."""

    code = "snapshot_error"


class IndexBusy(QueryNodeError):
    """A search asked not to wait found the index being written; the caller retries waiting."""

    code = "index_busy"
