"""Query-node benchmark: build throughput, recall, latency in-process and over HTTP, filters,
and delta freshness (produce to Kafka -> searchable on a node that follows item-deltas).

    python -m bench.query_node --n 100000 --dim 64 --queries 1000 --out bench/results

One run, one seeded data set, three indexes built from it with the same M and ef_construction:

- ``hnswlib``: a raw ``hnswlib.Index`` in this process, the baseline every timing is set against;
- ``in-process``: ``nrtrec.ann.VectorIndex`` in this process (string ids, attributes, filters,
  exact fallback), i.e. the node's own code without HTTP;
- ``http``: a real ``nrtrec query-node`` subprocess on a free loopback port; this process is the
  load generator, with one keep-alive ``httpx.Client`` (sequential requests, one connection).

The freshness section (``--no-freshness`` skips it) starts its own Kafka broker (the local runner,
in a temporary directory) and a second query node that follows ``item-deltas``.

The run is a list of sections (``main.SECTIONS``); each returns a JSON-able dict stored under its
name in the results, and may add panels to the plot (``plots.PANELS``). The modules:

- ``params``: the constants, ``Params`` (the command line's choices) and the node's ef;
- ``data``: the seeded data set, its exact nearest neighbours, recall;
- ``node``: ``NodeProcess``, an ``nrtrec query-node`` subprocess and a client to it;
- ``run``: ``Bench``, what the sections share, and how they time paths against each other;
- ``build``, ``search``, ``filtered``, ``freshness``: one section each (``freshness_probes``:
  the freshness section's producer of deltas and its poller);
- ``targets``, ``plots``, ``summary``: the DESIGN targets, the PNG, the table printed at the end;
- ``main``: the command line.

bench/README.md explains every figure.
"""
