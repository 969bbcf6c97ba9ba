"""The bulk backfill: the whole catalogue embedded in one batch, one index snapshot per shard.

One module per step of ``run_bulk`` (see ``run``): ``marks`` (where the topics end),
``catalogue`` (listings folded up to the marks), ``build`` (encoded, placed on shards,
indexed), ``load`` (swapped into the query nodes); ``manifest`` is ``bulk.json``, where delta
mode continues from.
"""

from nrtrec.streaming.bulk.catalogue import Catalogue, read_catalogue
from nrtrec.streaming.bulk.layout import ShardLayout, shard_layout
from nrtrec.streaming.bulk.load import LoadedShard, load_snapshots
from nrtrec.streaming.bulk.manifest import (
    BulkManifest,
    BulkShard,
    default_out_dir,
    read_listings_offsets,
    read_manifest,
)
from nrtrec.streaming.bulk.marks import high_watermarks, item_delta_marks
from nrtrec.streaming.bulk.run import run_bulk
from nrtrec.streaming.errors import BulkError

__all__ = [
    "BulkError",
    "BulkManifest",
    "BulkShard",
    "Catalogue",
    "LoadedShard",
    "ShardLayout",
    "default_out_dir",
    "high_watermarks",
    "item_delta_marks",
    "load_snapshots",
    "read_catalogue",
    "read_listings_offsets",
    "read_manifest",
    "run_bulk",
    "shard_layout",
]
