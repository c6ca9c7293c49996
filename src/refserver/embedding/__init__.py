"""Text embeddings shared by ingest and search."""

from refserver.embedding.model import Embedder, get_embedder

__all__ = ["Embedder", "get_embedder"]
