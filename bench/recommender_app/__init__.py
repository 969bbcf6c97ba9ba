"""Recommender-app benchmark: ``GET /v1/users/{user_id}/recommendations`` under sustained load.

    python -m bench.recommender_app --out bench/results

The serving path (``stack``): each as its own process on a free loopback port, a Redis
(``redis-server``) holding the user vectors, ``--shards`` query nodes holding the catalogue, a
gateway over them, and two ``nrtrec app`` processes in front that differ only in how they read:
``shards`` fans out over the nodes itself (``app.query_path``, what ``nrtrec up`` runs) and
``gateway`` goes through the gateway (one more process per request). This process builds the
data and drives the load.

Sections, one run:

- ``baseline``: one request at a time, interleaved per user, through every path: both apps'
  recommendations, the app's ``/healthz`` (HTTP and framework alone), the search the app sends
  (same body) to the gateway and to one query node, and the store's ``get`` in this process.
- ``load``: for each ``--rates`` value and each app, ``--workers`` load-generator processes
  send requests open-loop (each at its scheduled time, however many are in flight, over
  keep-alive connections) for ``--seconds``. Latency counts from the scheduled send time, so a
  generator or app falling behind shows up (no coordinated omission). ``Server-Timing`` splits
  each request into store, search and the app's own code.
- ``pipeline`` (``--pipeline``): the whole stack of ``nrtrec up`` (Kafka, Flink with both jobs,
  Triton, Redis, 2 shards of 2 replicas, gateway, app; ``tests/faults/harness.py``) with the
  MovieLens catalogue indexed and clicks replayed into Kafka at ``--pipeline-click-rate``, and
  the same open-loop load on random MovieLens users at ``--pipeline-rates``.

The modules: ``params`` (constants, ``Params``), ``stack`` (the serving-path processes),
``data``, ``baseline``, ``load`` (the open-loop generator, shared by the load and pipeline
sections), ``pipeline``, ``report`` (targets, summary table), ``plots``, ``main``.
bench/README.md explains every figure. Writes ``recommender_app.json`` and ``.png``.
"""
