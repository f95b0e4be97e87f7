"""Training and evaluation of the chest-radiograph retrieval embedding (``cxr-embed``)."""
