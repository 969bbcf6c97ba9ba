"""Query-node benchmark: build throughput, recall, latency in-process and over HTTP (at the
node's default ef and over an ef sweep, compared at matched recall), filters, search during a
bulk upsert, and delta → node (produce to item-deltas → searchable on the node).

    python -m bench.query_node --data uniform,tower --out bench/results

One run per data set (``--data``: clusters, uniform, tower), each with its own query node and
its own JSON and PNG; three indexes built from the data with the same M, ef_construction and
insert threads:

- ``hnswlib``: a raw ``hnswlib.Index`` in this process, the baseline every timing is set against;
- ``in-process``: ``nrtrec.ann.VectorIndex`` in this process (string ids, attributes, filters,
  exact fallback), i.e. the node's own code without HTTP;
- ``http``: a real ``nrtrec query-node`` subprocess on a free loopback port; this process is the
  load generator, with one keep-alive connection for the timed requests
  (``bench.common.LeanClient``, sequential requests) and an ``httpx.Client`` for the rest.

The search-during-upsert section searches from a process of its own (``searcher``). The delta →
node section (``--no-freshness`` skips it) starts its own Kafka broker (the local runner, in a
temporary directory) and a second query node that follows ``item-deltas``.

The run is a list of sections (``main.SECTIONS``); each returns a JSON-able dict stored under its
name in the results, and may add panels to the plot (``plots.PANELS``). The modules:

- ``params``: the constants, ``Params`` (the command line's choices) and the node's ef;
- ``data``: the seeded data set (``bench.datasets`` for uniform and tower), its exact nearest
  neighbours, recall;
- ``node``: ``NodeProcess``, an ``nrtrec query-node`` subprocess and a client to it;
- ``run``: ``Bench``, what the sections share, and how they time paths against each other;
- ``build``, ``search``, ``sweep``, ``filtered``, ``during_upsert``, ``freshness`` (the
  ``delta_to_node`` section): one section each (``searcher``, ``freshness_probes``: their
  instruments);
- ``targets``, ``plots`` (and ``plots_serving``), ``summary``: the targets, the PNG, the table
  printed at the end;
- ``main``: the command line.

bench/README.md explains every figure.
"""
