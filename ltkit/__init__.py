"""ltkit: long-tailed image recognition from a cached feature store."""

__version__ = "0.1.0"
