"""The online store of user vectors: one interface, one module per backend (Feast's shape).

The streaming job writes through it and the recommender app reads through it; neither knows
which backend is behind it::

    store = open_store(settings)          # Redis or Couchbase, from settings.user_store.backend
    store.put(vector, recent_items=[...]) # merges into the user's record, keeps the newest versions
    record = store.get("u1")              # UserVectors, newest version first, or None
"""

from nrtrec.user_store.base import UserVectorStore, open_store
from nrtrec.user_store.errors import StoreError, StoreUnavailable

__all__ = ["StoreError", "StoreUnavailable", "UserVectorStore", "open_store"]
