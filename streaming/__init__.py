"""The near-real-time pipeline on PyFlink.

- ``jobs/user_vectors_job.py``: ``clicks`` -> keyed history -> user tower -> user-vector store.
- ``jobs/item_deltas_job.py``: ``listings`` -> item tower -> ``item-deltas`` for the query nodes.
- ``bulk``: the whole catalogue at once, as index snapshots per shard (BULK before DELTA).

The logic of each job lives in plain Python (``parsing``, ``batching``, ``user_vectors``,
``item_deltas``) so it is tested without a cluster; the job files only wire it into Flink.
"""
