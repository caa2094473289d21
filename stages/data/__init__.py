"""Data: datasets (validation, stable row ids), documents (extraction and chunking), sentence embeddings, the vector
index, and embedding similarity."""
