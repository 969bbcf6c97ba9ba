"""The ANN libraries a ``VectorIndex`` can stand on, behind one ``Graph`` interface.

- ``hnsw`` (default): hnswlib. Deletes in place and reuses slots; filters by a Python callback
  per visited node; float32 only.
- ``faiss``: faiss's HNSW. Filters by a bitmap faiss checks in C++; ``quantization: int8``
  keeps 8-bit codes in the graph, metric hamming packed bits (its binary HNSW); deletes and
  updates retire faiss ids until a compaction.

ScaNN (the second backend of eBay's engine) is not here: its wheels need numpy 2, and
tritonclient < 2.50 (the newest whose gRPC stubs import under apache-beam's grpcio ceiling)
needs numpy < 2; see the README's "ANN backends".
"""

from nrtrec.ann.graphs.base import FilterSupport, Graph, GraphMemory, GraphShort
from nrtrec.ann.graphs.hnsw import HnswGraph
from nrtrec.schemas.query_api import Backend


def graph_class(backend: Backend | str) -> type[Graph]:
    if Backend(backend) is Backend.FAISS:
        # Imported when first used: faiss takes ~0.3 s to load and logs its CPU probing
        # ("No module named 'faiss.swigfaiss_avx2'") on every command that imports nrtrec.ann.
        from nrtrec.ann.graphs.faiss_hnsw import FaissGraph

        return FaissGraph
    return HnswGraph


__all__ = [
    "FilterSupport",
    "Graph",
    "GraphMemory",
    "GraphShort",
    "HnswGraph",
    "graph_class",
]
