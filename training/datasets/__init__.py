"""Dataset loaders (numpy-only): public formats and labeling-tool exports. No torch here."""
