"""Errors of the ANN library. Each names the caller's mistake; ``code`` is what HTTP answers."""

from __future__ import annotations


class AnnError(Exception):
    """Base of every error this package raises."""

    code = "ann_error"


class InvalidSpec(AnnError):
    """An index spec that hnswlib cannot build (bad name, dimension, metric, parameters)."""

    code = "invalid_spec"


class InvalidVector(AnnError):
    """Wrong dimension, NaN or infinity, or a zero vector where cosine needs a direction."""

    code = "invalid_vector"


class OutOfRange(AnnError):
    """A search parameter (k, ef) or a batch size outside the index's limits."""

    code = "out_of_range"


class SnapshotError(AnnError):
    """A snapshot that cannot be written or read back."""

    code = "snapshot_error"


class IndexBusy(AnnError):
    """A search asked not to wait found the index being written; the caller retries waiting."""

    code = "index_busy"
