"""Promotion gate, rollback and shadow-mode agreement for the model registry."""
