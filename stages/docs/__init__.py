"""DataOps stages of retrieval use cases: documents -> passages (extract) -> chunks (chunk) -> vector index (index)."""
