"""Steps 3 and 4 of a bulk run: the live listings encoded with one encoder version, placed on
the shard that owns their ``item-deltas`` partition, and built into one index per shard."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from nrtrec.ann import IndexSpec, VectorIndex
from nrtrec.core.settings import Settings
from nrtrec.inference.client import open_encoder
from nrtrec.schemas import ListingEvent
from nrtrec.schemas.partitioning import ShardMap
from nrtrec.schemas.query_api import Metric
from nrtrec.streaming.attributes import listing_attributes
from nrtrec.streaming.bulk.progress import BUILDING, ENCODING, ProgressCallback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltShard:
    shard: int
    partitions: tuple[int, ...]
    index: VectorIndex


def encode_catalogue(
    settings: Settings,
    listings: list[ListingEvent],
    version: int | None,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, int]:
    """Vectors of ``listings`` (in order) and the encoder version that made them."""
    with open_encoder(settings) as encoder:
        version = encoder.resolve(version)
        if not listings:
            return np.zeros((0, settings.inference.dim), np.float32), version
        log.info("encoding %d listings with encoder version %d", len(listings), version)
        parts = []
        step = settings.inference.batch_size
        for start in range(0, len(listings), step):
            embeddings = encoder.encode_listings(listings[start : start + step], version)
            parts.append(embeddings.vectors)
            if progress is not None:
                progress(ENCODING, min(start + step, len(listings)), len(listings))
        return np.concatenate(parts), version


def build_shards(
    settings: Settings,
    shard_map: ShardMap,
    listings: list[ListingEvent],
    vectors: np.ndarray,
    version: int,
    progress: ProgressCallback | None = None,
) -> list[BuiltShard]:
    """One index per shard holding the items of that shard's partitions."""
    qn = settings.query_node
    rows: list[list[int]] = [[] for _ in range(shard_map.num_shards)]
    for row, listing in enumerate(listings):
        rows[shard_map.shard_for(listing.item_id)].append(row)
    dim = int(vectors.shape[1]) if len(listings) else settings.inference.dim
    built = []
    for shard, mine in enumerate(rows):
        spec = IndexSpec(
            name=qn.index_name,
            model_version=version,
            dim=dim,
            metric=Metric.COSINE,
            M=qn.M,
            ef_construction=qn.ef_construction,
            # Room for the deltas that follow, so the first new items do not resize the graph
            # on a node that is serving it.
            max_elements=max(qn.max_elements, math.ceil(len(mine) * 1.25)),
            backend=qn.backend,
            quantization=qn.quantization,
        )
        index = VectorIndex(spec, qn)
        if mine:
            index.upsert(
                [listings[r].item_id for r in mine],
                vectors[mine],
                [listing_attributes(listings[r]) for r in mine],
            )
        built.append(BuiltShard(shard, shard_map.partitions_of(shard), index))
        if progress is not None:
            progress(BUILDING, shard + 1, shard_map.num_shards)
    return built
