"""``medws similar`` and ``medws similar-index`` (similar-case retrieval commands)."""
