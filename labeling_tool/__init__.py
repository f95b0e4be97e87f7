"""Labeling tool: ``core`` (label store, schema, import/export, de-identification) and ``qt``."""
