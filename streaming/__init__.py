"""PyFlink jobs: user embeddings from clicks, item deltas from listings, bulk backfill."""
