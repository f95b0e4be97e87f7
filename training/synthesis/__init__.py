"""Synthetic lesion insertion into real images with pixel-exact masks (numpy-only)."""
