"""The context lake: trajectory memory and enterprise documents, retrieval, semantic cache, serving."""
