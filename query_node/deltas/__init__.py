"""Keeps a query node fresh: ``DeltaConsumer`` applies ``item-deltas`` from Kafka, and
``Snapshotter`` saves snapshots whose offsets match the indexes and hot-swaps built ones."""

from nrtrec.query_node.deltas.consumer import DeltaConsumer, default_group
from nrtrec.query_node.deltas.snapshotter import Snapshotter

__all__ = ["DeltaConsumer", "Snapshotter", "default_group"]
