"""The safety rule service: rule files, their FAISS and BM25 indexes, and the HTTP API."""
