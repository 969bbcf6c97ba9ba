"""nrtrec: near-real-time recommendations and similar items over Kafka, Flink, Triton and HNSW.

Every ``nrtrec.X`` lives in the repository's top-level folder ``X/`` (``nrtrec.query_node`` is
``query_node/``); this root package holds only the version. The command line (``nrtrec ...``)
is ``nrtrec.cli``; the settings are ``nrtrec.core.settings.Settings``.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
