"""In-process vector-io backends: ``inline::sqlite-vec`` (the local default) and ``inline::faiss``."""
