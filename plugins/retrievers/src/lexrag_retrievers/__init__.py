"""Retrievers for lexrag: ONNX embedders, hnswlib dense index, BM25, hybrid fusion."""
