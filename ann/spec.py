"""What an index is: ``IndexSpec``, its key, vector space and HNSW build parameters.

``to_record`` / ``from_record`` convert it to and from the snapshot format's ``SnapshotSpec``
(``schemas.snapshot``), the form in which it crosses a process boundary.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nrtrec.ann.errors import InvalidSpec
from nrtrec.schemas.query_api import INDEX_NAME_PATTERN, Backend, Metric, Quantization
from nrtrec.schemas.snapshot import SnapshotSpec

MAX_DIM = 4096


@dataclass(frozen=True)
class IndexSpec:
    """What an index is: its key, its vector space, its backend and its HNSW build parameters."""

    name: str
    model_version: int
    dim: int
    metric: Metric
    M: int = 16
    ef_construction: int = 200
    # Initial capacity; the index grows past it.
    max_elements: int = 10_000
    backend: Backend = Backend.HNSW
    quantization: Quantization = Quantization.NONE

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(INDEX_NAME_PATTERN, self.name):
            raise InvalidSpec(
                f"index name {self.name!r} must be 1-128 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        try:
            object.__setattr__(self, "metric", Metric(self.metric))
        except ValueError:
            known = ", ".join(m.value for m in Metric)
            raise InvalidSpec(f"metric {self.metric!r} is not one of {known}") from None
        for what, kind in (("backend", Backend), ("quantization", Quantization)):
            try:
                object.__setattr__(self, what, kind(getattr(self, what)))
            except ValueError:
                known = ", ".join(k.value for k in kind)
                raise InvalidSpec(f"{what} {getattr(self, what)!r} is not one of {known}") from None
        if self.quantization is Quantization.INT8 and self.metric is Metric.HAMMING:
            raise InvalidSpec(
                "quantization int8 does not apply to metric hamming: its vectors are bits already"
            )
        if self.quantization is Quantization.INT8 and self.backend is not Backend.FAISS:
            raise InvalidSpec(
                "quantization int8 needs backend faiss: hnswlib stores float32 vectors only"
            )
        for what, value, low, high in (
            ("model_version", self.model_version, 1, None),
            ("dim", self.dim, 1, MAX_DIM),
            ("M", self.M, 2, 256),
            ("ef_construction", self.ef_construction, 1, None),
            ("max_elements", self.max_elements, 1, None),
        ):
            if not is_int(value) or value < low or (high is not None and value > high):
                bound = f"between {low} and {high}" if high else f"at least {low}"
                raise InvalidSpec(f"{what} must be an integer {bound}, got {value!r}")
        if self.metric is Metric.HAMMING and self.backend is Backend.FAISS and self.dim % 8:
            raise InvalidSpec(
                f"backend faiss keeps hamming codes packed 8 bits a byte: dim must be a "
                f"multiple of 8, got {self.dim}"
            )

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.model_version)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "metric": self.metric.value,
            "backend": self.backend.value,
            "quantization": self.quantization.value,
        }

    def to_record(self) -> SnapshotSpec:
        return SnapshotSpec(**self.to_dict())

    @classmethod
    def from_record(cls, record: SnapshotSpec) -> IndexSpec:
        return cls(**record.model_dump())


def is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)
