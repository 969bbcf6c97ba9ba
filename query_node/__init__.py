"""In-memory HNSW query nodes and the gateway that fans searches out over shards."""
