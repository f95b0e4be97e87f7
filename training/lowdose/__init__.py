"""Low-dose CT simulation by projection-domain noise insertion (numpy-only)."""
