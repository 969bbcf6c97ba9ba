"""nrtrec: near-real-time recommendations and similar items over Kafka, Flink, Triton and HNSW."""

from nrtrec.settings import Settings

__all__ = ["Settings", "__version__"]
__version__ = "0.1.0"
